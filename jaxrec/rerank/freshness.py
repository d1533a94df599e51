"""Freshness slots: a minimum share of recently added items in the final list, so new items
earn the impressions that their engagement history (and so their ranking score) lacks.

With positions (3, 8) and two slots the guarantee is "at least one fresh item at positions 0..3
and at least two at 0..8". Fresh items the ranking already put there count, so a list that is
fresh enough on its own is left alone; otherwise the best-scored fresh candidate not yet shown is
inserted at the position, and the list shifts down (its last item falls off).
"""

from __future__ import annotations

import numpy as np

from jaxrec.errors import UserError
from jaxrec.rerank import checks
from jaxrec.rerank.rules import GroupCaps
from jaxrec.rerank.slots import pin, pushed_off


def freshness_slots(ranked, ages, scores, max_age: float, slots: int, positions, *,
                    mask=None, caps: GroupCaps | None = None,
                    k: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Guarantee up to `slots` fresh items (age <= max_age seconds) by the given positions.

  ranked: [m] candidate indices, the list so far. ages, scores: [N] per candidate. positions:
  0-based, one per slot (the first `slots` are used). mask: [N] bool of candidates that may be
  inserted. caps: group caps the list must keep to, updated for the items inserted and those
  pushed off the end. k: list length (default m).

  Returns (items [<= k] candidate indices, placed [<= k] bool: True where freshness put the item).
  """
  ranked = checks.vector("ranked", ranked, dtype=np.int64)
  ages = checks.vector("ages", ages, dtype=np.float64)
  n = len(ages)
  scores = checks.vector("scores", scores, n)
  slots = checks.count("slots", slots)
  positions = [checks.count("positions", p) for p in positions]
  if len(positions) < slots:
    raise UserError(f"{slots} freshness slots need {slots} positions, got {positions}; give one "
                    "position per slot.")
  k = len(ranked) if k is None else checks.count("k", k, 1)
  allowed = checks.mask(mask, n)

  fresh = ages <= max_age
  # Fresh insertable candidates, best score first.
  shown = np.zeros(n, bool)
  shown[ranked] = True
  pool = np.flatnonzero(fresh & allowed & ~shown)
  pool = pool[np.argsort(-scores[pool], kind="stable")]
  items, placed = ranked[:k], np.zeros(min(len(ranked), k), bool)
  for need, position in enumerate(sorted(positions[:slots]), 1):
    if fresh[items[:position + 1]].sum() >= need:
      continue
    # Inserting into a full list pushes its last unplaced item off, freeing room in its group.
    if len(items) == k and placed.all():
      break  # every slot already holds a fresh item
    dropped = pushed_off(items, placed, k, 1)[0]
    fits = pool if caps is None else pool[caps.fits(pool, dropped)]
    if not len(fits):
      break  # no fresh candidate left to insert
    pick = fits[0]
    items, placed = pin(items, placed, [pick], [position], k)
    pool = pool[pool != pick]
    if caps is not None:
      if dropped >= 0:
        caps.release(dropped)
      caps.take(pick)
  return items, placed
