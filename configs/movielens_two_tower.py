"""Two-tower retrieval on MovieLens-100K: in-batch softmax with logQ correction, full-ranking
evaluation under the sequential models' protocol.

  jaxrec train --config configs/movielens_two_tower.py --workdir workdirs/ml100k-two-tower
  jaxrec train --config configs/movielens_two_tower.py:smoke --workdir /tmp/smoke
"""

from jaxrec.train.defaults import two_tower_config, variant


def get_config(arg=None):
  return variant(two_tower_config(), arg)
