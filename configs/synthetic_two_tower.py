"""Two-tower retrieval on a synthetic catalogue of 1M items (768k of them never interacted with,
embedded from metadata alone): the embeddings benchmarks/scann_vs_exact.py indexes.

  jaxrec train --config configs/synthetic_two_tower.py --workdir workdirs/synthetic-two-tower
  python benchmarks/scann_vs_exact.py --workdir workdirs/synthetic-two-tower

The dataset is generated and prepared into data.dir on first use (about 30 s).
"""

import ml_collections

from jaxrec.train.defaults import two_tower_config, variant


def get_config(arg=None):
  config = two_tower_config()
  config.data.dataset = "synthetic"
  config.data.dir = "data/synthetic-1m"
  config.data.synthetic = ml_collections.ConfigDict(
      {"num_users": 100_000, "num_items": 1_000_000, "num_events": 5_000_000, "seed": 0})
  config.model.max_len = 50
  config.model.query_encoder = "pooling"
  config.train.batch_size = 256
  config.train.num_steps = 400  # about one epoch of 100k users
  config.train.eval_every = 400  # full ranking of 1M items for 100k users: once, at the end
  config.train.patience = 0
  config.eval.batch_size = 512
  return variant(config, arg)
