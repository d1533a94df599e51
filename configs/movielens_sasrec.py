"""SASRec on MovieLens-100K: leave-one-out by time, full-softmax loss, full-ranking evaluation.

  jaxrec train --config configs/movielens_sasrec.py --workdir workdirs/ml100k-sasrec
  jaxrec train --config configs/movielens_sasrec.py:smoke --workdir /tmp/smoke
"""

from jaxrec.train.defaults import sequential_config, variant


def get_config(arg=None):
  config = sequential_config()
  config.model.name = "sasrec"
  return variant(config, arg)
