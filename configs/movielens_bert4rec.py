"""BERT4Rec on MovieLens-100K: masked-item objective, full-ranking evaluation.

  jaxrec train --config configs/movielens_bert4rec.py --workdir workdirs/ml100k-bert4rec
  jaxrec train --config configs/movielens_bert4rec.py:smoke --workdir /tmp/smoke
"""

from jaxrec.train.defaults import sequential_config, variant


def get_config(arg=None):
  config = sequential_config()
  config.model.name = "bert4rec"
  config.loss.mask_prob = 0.2
  config.train.num_steps = 700  # a masked objective learns from fewer positions per step
  return variant(config, arg)
