"""Business rules: items that must never be shown, items this user should not see again, and
per-group caps (at most `cap` items of one genre or creator in the final list).

Blocked ids come from the catalogue (moderation, takedowns) and `exclude` from the user (seen,
dismissed); both are item ids, not candidate positions, so callers need not know how retrieval
ordered the candidates.
"""

from __future__ import annotations

import numpy as np

from jaxrec.grouping import rank_within_groups
from jaxrec.rerank import checks


def allowed(candidates, blocked=(), exclude=()) -> np.ndarray:
  """[N] bool: True for candidates that are neither blocked nor excluded."""
  candidates = checks.vector("candidates", candidates)
  ok = np.ones(len(candidates), bool)
  for ids in (blocked, exclude):
    ids = np.sort(np.asarray(ids).ravel())
    if ids.size:
      # Binary search in the sorted ids: np.isin sorts the candidates too, ~7x slower here.
      at = np.minimum(np.searchsorted(ids, candidates), ids.size - 1)
      ok &= ids[at] != candidates
  return ok


def cap_groups(order, groups, cap: int) -> np.ndarray:
  """The candidates of `order` (candidate indices, best first) kept when at most `cap` per group
  are taken greedily in that order."""
  order = np.asarray(order, np.int64)
  cap = checks.count("cap", cap, 1)
  _, codes = np.unique(np.asarray(groups)[order], return_inverse=True)
  return order[rank_within_groups(codes.ravel()) < cap]


class GroupCaps:
  """Per-request group counts for stages that pick one item at a time.

  `room` [N] says which candidates' groups have room; `take(i)` counts candidate i and closes
  its group once full; `release(i)` uncounts an item pushed off the end of the list.
  """

  def __init__(self, groups, cap: int):
    self.cap = checks.count("group_cap", cap, 1)
    groups = checks.vector("groups", groups)
    if np.issubdtype(groups.dtype, np.integer) and len(groups) and \
        0 <= groups.min() and groups.max() < 4 * len(groups):
      self.codes = groups  # small ids already index a counts array: skip np.unique's sort
    else:
      _, self.codes = np.unique(groups, return_inverse=True)
    self.counts = np.zeros(self.codes.max(initial=-1) + 1, np.int64)
    self.room = np.ones(len(self.codes), bool)

  def take(self, index: int) -> bool:
    """Count candidate `index`; True if that filled its group."""
    code = self.codes[index]
    self.counts[code] += 1
    if self.counts[code] < self.cap:
      return False
    self.room[self.codes == code] = False
    return True

  def release(self, index: int) -> None:
    code = self.codes[index]
    self.counts[code] -= 1
    if self.counts[code] == self.cap - 1:
      self.room[self.codes == code] = True

  def fits(self, indices, dropped: int = -1) -> np.ndarray:
    """Whether each candidate could be taken if `dropped` (if >= 0) were released first."""
    ok = self.room[indices]
    if dropped >= 0:
      ok |= self.codes[indices] == self.codes[dropped]
    return ok

  def left(self, indices) -> np.ndarray:
    """How many more items each candidate's group may take."""
    return self.cap - self.counts[self.codes[indices]]
