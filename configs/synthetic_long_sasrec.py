"""SASRec over the last 200 tokens of synthetic long histories: the long-context baseline.

  jaxrec train --config configs/synthetic_long_sasrec.py --workdir workdirs/long-sasrec
"""

from jaxrec.train.defaults import long_history_data, sequential_config, variant


def get_config(arg=None):
  config = long_history_data(sequential_config())
  config.model.name = "sasrec"
  config.model.max_len = 200
  config.train.batch_size = 80  # 16k tokens per step, as the foundation configs
  config.train.num_steps = 400
  config.train.eval_every = 100
  config.train.patience = 0
  return variant(config, arg)
