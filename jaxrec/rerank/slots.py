"""Putting items at fixed positions of a list, for the stages that reserve slots (freshness,
exploration).

Items already pinned by an earlier stage keep their positions; a new item whose position is taken
goes to the next free one; the rest of the list keeps its order around them and whatever no
longer fits in k falls off the end. Positions are 0-based; one past the end of a short list
appends.
"""

from __future__ import annotations

import numpy as np


def pin(items, pinned, new_items, positions, k: int) -> tuple[np.ndarray, np.ndarray]:
  """Insert `new_items` at `positions` into `items` [<= k], keeping `pinned` ones in place.

  Returns (items [<= k], pinned [<= k] bool, True for the old pinned and the new items).
  """
  items = np.asarray(items, np.int64)
  pinned = np.asarray(pinned, bool)
  new_items = np.asarray(new_items, np.int64)
  total = min(k, len(items) + len(new_items))
  out = np.full(total, -1, np.int64)
  held = np.zeros(total, bool)
  old = np.flatnonzero(pinned)
  out[old], held[old] = items[old], True
  for item, position in zip(new_items, positions):
    free = np.flatnonzero(~held)
    if not len(free):
      break
    after = free[free >= min(position, total - 1)]
    # Past the end of a short list, or every later slot taken: the last free slot is as close
    # to the asked position as the list allows.
    slot = after[0] if len(after) else free[-1]
    out[slot], held[slot] = item, True
  rest = items[~pinned]
  free = np.flatnonzero(~held)
  out[free[:len(rest)]] = rest[:len(free)]
  keep = out >= 0  # holes remain only if new_items outnumber positions; close them up
  return out[keep], held[keep]


def pushed_off(items, pinned, k: int, count: int) -> np.ndarray:
  """The items [count] that `count` successive insertions would push off the end of the list
  (-1 for an insertion that only lengthens a short list): the last unpinned ones, last first."""
  items = np.asarray(items, np.int64)
  tail = items[~np.asarray(pinned, bool)][::-1]
  out = np.full(count, -1, np.int64)
  start = min(max(k - len(items), 0), count)
  taken = tail[:count - start]
  out[start:start + len(taken)] = taken
  return out
