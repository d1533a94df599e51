"""Multi-task DLRM ranking on MovieLens-100K: impressions are the rated items plus 4 sampled
unrated ones each; heads click (rated), like (rating >= 4) and rating (regression); rows of the
24 embedding tables updated by row-wise Adagrad.

  jaxrec train --config configs/movielens_dlrm.py --workdir workdirs/ml100k-dlrm
  jaxrec train --config configs/movielens_dlrm.py:smoke --workdir /tmp/smoke
  jaxrec train --config configs/movielens_dlrm.py:demo --workdir demo_out/dlrm   # make demo
"""

from jaxrec.train.defaults import ranking_config, variant


def get_config(arg=None):
  if arg == "demo":
    # `make demo`: the same model trained 300 steps instead of 1,000. Benchmarks use no arg.
    config = ranking_config()
    config.train.num_steps = 300
    return config
  config = variant(ranking_config(), arg)
  if arg == "smoke":
    config.train.batch_size = 100
    config.eval.batch_size = 500
  return config
