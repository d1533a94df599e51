"""The foundation model over 2,048 tokens of synthetic long histories (>= 2,000 per user).

  jaxrec train --config configs/synthetic_long_foundation.py --workdir workdirs/long-foundation
  python benchmarks/foundation_long_context.py    # against SASRec over the last 200 tokens

1,024-token sliding-window attention plus 4 learned attention-sink tokens (visible to every
position; they see no history, so they summarise nothing), computed in chunks: memory grows
linearly with the context (see benchmarks/foundation_long_context.py). The last position reads
the last 1,024 tokens directly and, with 2 layers, 2 x 1,023 + 1 = 2,047 through the first
layer's states; every position of the 2,048 is trained. Every position also reads the time
until the next token, the last one the request's (model.request_gap).
"""

from jaxrec.train.defaults import long_context_foundation_config, variant


def get_config(arg=None):
  config = long_context_foundation_config(max_len=2048)
  config.train.num_steps = 400
  config.train.eval_every = 100
  config.train.log_every = 20
  config.train.patience = 0
  return variant(config, arg)
