"""SASRec on MovieLens-100K: leave-one-out by time, full-softmax loss, full-ranking evaluation.

  jaxrec train --config configs/movielens_sasrec.py --workdir workdirs/ml100k-sasrec
  jaxrec train --config configs/movielens_sasrec.py:smoke --workdir /tmp/smoke
  jaxrec train --config configs/movielens_sasrec.py:demo --workdir demo_out/sasrec   # make demo
"""

from jaxrec.train.defaults import sequential_config, variant


def get_config(arg=None):
  config = sequential_config()
  config.model.name = "sasrec"
  if arg == "demo":
    # `make demo`: the same model trained 105 steps instead of up to 420. Benchmarks use no arg.
    config.train.num_steps = 105
    return config
  return variant(config, arg)
