"""BPR-MF on MovieLens-100K: user and item embeddings plus item bias, BPR loss with uniform
negatives, trained by the one training loop and evaluated under the models' protocol.
dim, loss.l2, loss.num_negatives, init_scale and the learning rate were picked on validation
NDCG@10 (dim 64/128, l2 1e-4..1e-2, 8 or 32 negatives, learning rate 5e-3..2e-2).

  jaxrec train --config configs/movielens_bpr.py --workdir workdirs/ml100k-bpr
  jaxrec train --config configs/movielens_bpr.py:smoke --workdir /tmp/smoke
"""

import ml_collections

from jaxrec.train.defaults import sequential_config


def get_config(arg=None):
  config = sequential_config()
  config.task = "bpr"
  config.model = ml_collections.ConfigDict({"name": "bpr", "dim": 128, "init_scale": 0.1})
  config.loss = ml_collections.ConfigDict({"num_negatives": 8, "l2": 5e-3})
  config.optimizer.learning_rate = 5e-3
  config.optimizer.warmup_steps = 100
  config.train.batch_size = 1024
  config.train.num_steps = 4000  # ~42 epochs of 98k training pairs
  config.train.log_every = 100
  config.train.eval_every = 200
  config.eval.ks = (10, 20, 100)
  if arg == "smoke":
    config.model.dim = 16
    config.train.batch_size = 64
    config.train.num_steps = 6
    config.train.log_every = 2
    config.train.eval_every = 3
    config.eval.batch_size = 128
  elif arg is not None:
    raise ValueError(f"unknown config variant {arg!r}: use no variant or ':smoke'")
  return config
