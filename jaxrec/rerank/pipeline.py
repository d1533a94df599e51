"""The re-ranking stage of serving: from the ranker's scored candidates to the k items shown.

    1. rules        drop blocked and excluded items
    2. selection    MMR (score order when mmr_lambda is 1) with group caps applied per pick
    3. freshness    make sure enough recently added items are near the top
    4. exploration  Thompson-sampled slots for items with few impressions

Each shown item carries the stage that placed it and a propensity: the probability the logging
policy showed it there. Only exploration is random, and the number of items it places is fixed
by the request (greedy picks exhaust the pool or the slots either way), so every other item's
position is deterministic and its propensity is 1.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.errors import UserError
from jaxrec.rerank import checks, rules
from jaxrec.rerank.config import RerankConfig
from jaxrec.rerank.exploration import explore
from jaxrec.rerank.freshness import freshness_slots
from jaxrec.rerank.mmr import mmr_select
from jaxrec.rerank.posteriors import BetaPosteriors
from jaxrec.rerank.slots import pin, pushed_off

__all__ = ["RerankConfig", "RerankResult", "STAGES", "rerank"]

STAGES = np.array(["ranking", "mmr", "freshness", "exploration"])
RANKING, MMR, FRESHNESS, EXPLORATION = range(len(STAGES))


@dataclasses.dataclass
class RerankResult:
  items: np.ndarray  # [k'] item ids, in display order (k' < k only when too few candidates)
  stage: np.ndarray  # [k'] str, the stage that placed each item (one of STAGES)
  propensity: np.ndarray  # [k'] probability the item was shown: 1 unless explored (exploration.py)
  indices: np.ndarray  # [k'] positions of the items in the request's candidates


def rerank(candidates, scores, vectors, k: int, config: RerankConfig = RerankConfig(), *,
           groups=None, ages=None, blocked=(), exclude=(),
           posteriors: BetaPosteriors | None = None,
           rng: np.random.Generator | None = None) -> RerankResult:
  """Re-rank one request's candidates [N] (item ids) by their ranking scores [N] and content
  vectors [N, D] into the k items to show.

  groups: [N] group per candidate (genre, creator id), for config.group_cap. ages: [N] seconds
  since each item was added, for freshness. blocked, exclude: item ids never to show.
  posteriors: engagement posteriors by item id, for exploration; rng: its randomness (a fresh
  default_rng() when None).
  """
  candidates = checks.vector("candidates", candidates)
  n = len(candidates)
  k = checks.count("k", k, 1)
  _require(config, groups=groups, ages=ages, posteriors=posteriors)

  allowed = rules.allowed(candidates, blocked, exclude)
  caps = rules.GroupCaps(checks.vector("groups", groups, n), config.group_cap) \
      if config.group_cap is not None else None
  stage = np.full(n, RANKING, np.int8)

  items, reordered = mmr_select(scores, vectors, k, config.mmr_lambda, allowed, caps)
  stage[items[reordered]] = MMR
  pinned = np.zeros(len(items), bool)

  if config.freshness_slots:
    ages = checks.vector("ages", ages, n)
    items, pinned = freshness_slots(items, ages, scores, config.freshness_max_age_s,
                                    config.freshness_slots, config.freshness_positions,
                                    mask=allowed, caps=caps, k=k)
    stage[items[pinned]] = FRESHNESS

  propensity = np.ones(n)
  if config.explore_slots:
    unshown = allowed.copy()
    unshown[items] = False
    rng = rng if rng is not None else np.random.default_rng()
    dropped = pushed_off(items, pinned, k, config.explore_slots)
    chosen = explore(candidates, scores, posteriors, rng, config.explore_max_impressions,
                     config.explore_slots, mask=unshown, caps=caps, dropped=dropped,
                     pool=config.explore_pool, draws=config.explore_draws)
    items, pinned = pin(items, pinned, chosen.chosen, config.explore_positions, k)
    stage[chosen.chosen] = EXPLORATION
    propensity[chosen.chosen] = chosen.propensity

  return RerankResult(items=candidates[items], stage=STAGES[stage[items]],
                      propensity=propensity[items], indices=items)


def _require(config: RerankConfig, **given) -> None:
  needs = {"groups": ("group_cap", config.group_cap is not None),
           "ages": ("freshness_slots", config.freshness_slots > 0),
           "posteriors": ("explore_slots", config.explore_slots > 0)}
  for arg, (field, on) in needs.items():
    if on and given[arg] is None:
      raise UserError(f"RerankConfig.{field}={getattr(config, field)} needs {arg}= passed to "
                      f"rerank(); pass it, or turn the setting off.")
