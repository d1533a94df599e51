"""The foundation model over 4,096 tokens of synthetic long histories: the longest context.

  jaxrec train --config configs/synthetic_foundation_4096.py --workdir workdirs/foundation-4096

Same model as configs/synthetic_long_foundation.py (1,024-token window + 4 attention-sink tokens,
chunks of 128); 4 users of 4,096 tokens per step, the same tokens per step as 8 of 2,048.
"""

from jaxrec.train.defaults import long_context_foundation_config, variant


def get_config(arg=None):
  config = long_context_foundation_config(max_len=4096)
  config.data.synthetic.min_events = 4200  # every user fills the context
  config.data.synthetic.max_events = 8000
  config.data.dir = "data/synthetic-long-4096"
  config.train.num_steps = 400
  config.train.eval_every = 100
  config.train.patience = 0
  return variant(config, arg)
