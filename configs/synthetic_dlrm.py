"""Multi-task DLRM ranking on synthetic impressions: every impression the logging policy showed,
with the user's click / watch / like / share / follow / skip / report answer. Heads for each,
`complete` (watched 90%+) besides, and the combined score
3·watch + 2·complete + 1.5·share − 5·report − 1·skip (no follow: the generator has none).

  jaxrec train --config configs/synthetic_dlrm.py --workdir workdirs/synthetic-dlrm

The dataset is generated and prepared into data.dir on first use.
"""

import ml_collections

from jaxrec.train.defaults import ranking_config, variant


def get_config(arg=None):
  config = ranking_config()
  config.data.dataset = "synthetic"
  config.data.dir = "data/synthetic-ranking"
  config.data.synthetic = ml_collections.ConfigDict(
      {"num_users": 20_000, "num_items": 20_000, "num_events": 2_000_000, "seed": 0})
  config.data.split = "temporal"
  config.data.negatives_per_positive = 0  # the log holds real non-engaged impressions
  head = lambda label, kind="binary": {"label": label, "kind": kind, "weight": 1.0}
  config.heads = ml_collections.ConfigDict({
      "click": head("click"), "watch": head("watch", "regression"),
      "complete": head("complete"), "like": head("like"), "share": head("share"),
      "skip": head("skip"), "report": head("report")})
  # The generator's users do not follow creators, so there is no follow head here.
  config.policy = ml_collections.ConfigDict({"watch": 3.0, "complete": 2.0, "share": 1.5,
                                             "report": -5.0, "skip": -1.0})
  config.embedding.learning_rate = 0.2  # picked on validation click AUC (0.05, 0.2)
  config.train.batch_size = 1024
  config.train.num_steps = 2000
  config.train.eval_every = 500
  config.eval.batch_size = 4096
  return variant(config, arg)
