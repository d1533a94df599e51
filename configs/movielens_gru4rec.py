"""GRU4Rec on MovieLens-100K: full-softmax loss, full-ranking evaluation.

  jaxrec train --config configs/movielens_gru4rec.py --workdir workdirs/ml100k-gru4rec
  jaxrec train --config configs/movielens_gru4rec.py:smoke --workdir /tmp/smoke
"""

import ml_collections

from jaxrec.train.defaults import sequential_config, variant


def get_config(arg=None):
  config = sequential_config()
  config.model = ml_collections.ConfigDict({"name": "gru4rec", "max_len": 100, "dim": 64,
                                         "hidden": 128, "num_layers": 1, "dropout": 0.2})
  return variant(config, arg)
