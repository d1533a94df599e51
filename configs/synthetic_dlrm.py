"""Multi-task DLRM ranking on synthetic impressions: every impression the logging policy showed,
with the user's click / watch / like / share / follow / skip / report answer. Heads for each,
`complete` (watched 90%+) besides, and the combined score
3·watch + 2·complete + 1.5·share − 5·report − 1·skip (no follow: the generator has none).

  jaxrec train --config configs/synthetic_dlrm.py --workdir workdirs/synthetic-dlrm

The dataset is generated and prepared into data.dir on first use.
"""

from jaxrec.train.defaults import synthetic_ranking_config, variant


def get_config(arg=None):
  return variant(synthetic_ranking_config(), arg)
