"""Most-popular baseline on MovieLens-100K, evaluated under the trained models' protocol.

  jaxrec train --config configs/movielens_popularity.py --workdir workdirs/ml100k-popularity
  jaxrec train --config configs/movielens_popularity.py:smoke --workdir /tmp/smoke
"""

from jaxrec.train.defaults import baseline_config, baseline_variant


def get_config(arg=None):
  return baseline_variant(baseline_config("popularity"), arg)
