"""Two-tower retrieval on MovieLens-100K: in-batch softmax with logQ correction, full-ranking
evaluation under the sequential models' protocol.

  jaxrec train --config configs/movielens_two_tower.py --workdir workdirs/ml100k-two-tower
  jaxrec train --config configs/movielens_two_tower.py:smoke --workdir /tmp/smoke
"""

import ml_collections

from jaxrec.train.defaults import sequential_config, variant


def get_config(arg=None):
  config = sequential_config()
  config.task = "two_tower"
  config.model = ml_collections.ConfigDict({
      "name": "two_tower", "max_len": 100, "dim": 64, "hidden": 256, "title_buckets": 4096,
      "temperature": 0.05, "id_dropout": 0.1,
      "half_life_seconds": 3600.0,  # short-term interest: an hour-old item counts half
      # The history encoder: "pooling" (time-decayed short-term + long-term means) or "sasrec"
      # (a causal transformer; num_layers, num_heads, dropout apply to it).
      "query_encoder": "pooling", "num_layers": 2, "num_heads": 2, "dropout": 0.2,
  })
  config.loss = ml_collections.ConfigDict({
      "positions_per_user": 8,
      "frequency": "streaming",  # logQ from online estimates (Yi et al.) or "counts"
      "frequency_alpha": 0.05,  # the estimator's moving-average rate
      "uniform_negatives": 0,  # > 0: mixed negatives, this many uniform draws per batch
  })
  return variant(config, arg)
