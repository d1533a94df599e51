"""The foundation model on MovieLens-100K: leave-one-out by time, full-ranking evaluation.

  jaxrec train --config configs/movielens_foundation.py --workdir workdirs/ml100k-foundation
  jaxrec train --config configs/movielens_foundation.py:smoke --workdir /tmp/smoke
"""

from jaxrec.train.defaults import foundation_config, variant


def get_config(arg=None):
  config = foundation_config()
  return variant(config, arg)
