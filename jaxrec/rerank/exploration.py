"""Exploration slots by Thompson sampling: candidates with few impressions compete for `slots`
positions by a draw from their engagement posterior, so an item whose posterior is wide (few
observations) sometimes draws high and gets shown, and one that has proven poor rarely does.

The pool is the `pool` best-ranked eligible candidates: the ranker's score, personal to this
user, decides which new items are worth exploring here, and the bound keeps the cost fixed.

Propensities, for off-policy evaluation of logs: the probability that each explored item was
placed by exploration, estimated by re-running the same selection on `draws` further Thompson
draws (independent of the one that chose). The estimate is floored at 1/draws, as the item was
in fact placed; its standard error is at most 0.5/sqrt(draws) (0.05 for 100 draws).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.rerank import checks
from jaxrec.rerank.posteriors import BetaPosteriors
from jaxrec.rerank.rules import GroupCaps

__all__ = ["BetaPosteriors", "Exploration", "explore"]


@dataclasses.dataclass
class Exploration:
  chosen: np.ndarray  # [e] candidate indices, in the order their slots are filled
  propensity: np.ndarray  # [e] probability each was placed by exploration


def explore(candidates, base_scores, posteriors: BetaPosteriors, rng: np.random.Generator,
            max_impressions: int, slots: int, *, mask=None, caps: GroupCaps | None = None,
            dropped=(), pool: int = 20, draws: int = 100) -> Exploration:
  """Choose up to `slots` candidates with fewer than `max_impressions` impressions by Thompson
  draw, best draw first.

  candidates: [N] item ids, indexing `posteriors`. base_scores: [N] ranking scores, choosing
  the pool and breaking ties between equal draws. mask: [N] bool of candidates that may be
  explored (leave out those already in the list). caps: group caps the list keeps to, updated
  for the chosen. dropped: per slot, the candidate its insertion pushes off the list (-1: none;
  see slots.pushed_off), whose group then has room again.
  """
  candidates = checks.vector("candidates", candidates)
  n = len(candidates)
  base_scores = checks.vector("base_scores", base_scores, n)
  max_impressions = checks.count("max_impressions", max_impressions, 1)
  slots = checks.count("slots", slots)
  pool = checks.count("pool", pool, 1)
  draws = checks.count("draws", draws, 1)
  dropped = np.full(slots, -1, np.int64) if not len(dropped) else \
      checks.vector("dropped", dropped, slots, np.int64)
  if not slots:
    return Exploration(np.zeros(0, np.int64), np.zeros(0))
  eligible = np.flatnonzero(checks.mask(mask, n))
  if caps is not None:  # leave out groups that stay full whatever is pushed off
    freed = caps.codes[dropped[dropped >= 0]]
    eligible = eligible[caps.room[eligible] |
                        (caps.codes[eligible][:, None] == freed).any(axis=1)]
  eligible = eligible[posteriors.impressions(candidates[eligible]) < max_impressions]
  if not len(eligible):
    return Exploration(np.zeros(0, np.int64), np.zeros(0))
  # Best score first: argmax takes the first of equal draws, so ties go to the better score.
  eligible = eligible[np.argsort(-base_scores[eligible], kind="stable")[:pool]]

  # Row 0 decides; rows 1.. estimate propensities by making the same choice again.
  theta = posteriors.sample(candidates[eligible], rng, draws + 1)
  picks = _choose(theta, slots, caps, eligible, dropped)
  counts = np.bincount(picks[1:][picks[1:] >= 0], minlength=len(eligible))
  chosen = picks[0][picks[0] >= 0]
  if caps is not None:
    for index, off in zip(eligible[chosen], dropped):
      if off >= 0:
        caps.release(off)
      caps.take(index)
  return Exploration(eligible[chosen], np.maximum(counts[chosen], 1) / draws)


def _choose(theta: np.ndarray, slots: int, caps: GroupCaps | None, eligible: np.ndarray,
            dropped: np.ndarray) -> np.ndarray:
  """Per row of draws [R, M], the greedy picks [R, slots] (column index, -1 once none is left)
  by highest draw within the group caps; vectorised over rows, looping over the slots.

  A row stops at its first slot with nothing to pick, as that insertion (and the item it would
  push off) does not happen. The number of picks is then the same in every row: greedy choice
  under per-group limits always fills sum_g min(pool_g, room_g), whatever the order.
  """
  rows = np.arange(len(theta))
  taken = np.zeros(theta.shape, bool)
  alive = np.ones(len(theta), bool)
  if caps is not None:
    codes = caps.codes[eligible]
    left = np.tile(caps.left(eligible), (len(theta), 1))
  picks = np.full((len(theta), slots), -1, np.int64)
  for slot in range(slots):
    available = ~taken & alive[:, None]
    if caps is not None:
      if dropped[slot] >= 0:
        left += codes == caps.codes[dropped[slot]]
      available &= left > 0
    pick = np.argmax(np.where(available, theta, -np.inf), axis=1)
    ok = available[rows, pick]
    alive &= ok
    picks[ok, slot] = pick[ok]
    taken[rows[ok], pick[ok]] = True
    if caps is not None:
      left -= (codes == codes[pick][:, None]) & ok[:, None]
  return picks
