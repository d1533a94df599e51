"""The foundation model on the synthetic log, where every objective has something to learn from:
impressions, skips, clicks, plays, likes, shares and reports (action-strength weights), several
event types (the next-event-type head), genres, devices, locales, hours and time gaps.

  jaxrec train --config configs/synthetic_foundation.py --workdir workdirs/synthetic-foundation
  jaxrec train --config configs/synthetic_foundation.py:smoke --workdir /tmp/smoke

The dataset is generated and prepared into data.dir on first use. Sampled softmax with logQ
correction, as a large catalogue would need; leave-one-out split, full-ranking evaluation.
"""

import ml_collections

from jaxrec.train.defaults import foundation_config, variant


def get_config(arg=None):
  config = foundation_config()
  config.data.dataset = "synthetic"
  config.data.dir = "data/synthetic-foundation"
  config.data.synthetic = ml_collections.ConfigDict(
      {"num_users": 20_000, "num_items": 10_000, "num_events": 1_000_000, "seed": 0})
  config.model.max_len = 100
  config.loss.name = "sampled_softmax"
  config.loss.num_negatives = 512
  config.loss.horizon = 2
  config.loss.genre_weight = 0.1
  config.loss.event_type_weight = 0.1
  config.train.batch_size = 256
  config.train.num_steps = 2000
  config.train.eval_every = 250
  config.eval.batch_size = 512
  return variant(config, arg)
