"""Two-tower retrieval on MovieLens-100K: in-batch softmax with logQ correction, full-ranking
evaluation under the sequential models' protocol.

The query tower encodes the history with a causal transformer (SASRec) here: on this data it is
the stronger encoder (benchmarks/retrieval_quality.py: test NDCG@10 0.082 against 0.065 for the
time-decayed pooling, `--config.model.query_encoder=pooling`).

  jaxrec train --config configs/movielens_two_tower.py --workdir workdirs/ml100k-two-tower
  jaxrec train --config configs/movielens_two_tower.py:smoke --workdir /tmp/smoke
"""

from jaxrec.train.defaults import two_tower_config, variant


def get_config(arg=None):
  config = two_tower_config()
  config.model.query_encoder = "sasrec"
  return variant(config, arg)
