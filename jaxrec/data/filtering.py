"""k-core filtering: repeatedly drop users and items with fewer than k interactions."""

from __future__ import annotations

import numpy as np


def kcore_mask(user: np.ndarray, item: np.ndarray, k: int, max_rounds: int = 100) -> np.ndarray:
  """Rows to keep so every remaining user and item has at least k rows (a fixed point).

  `user` and `item` are contiguous non-negative ids.
  """
  keep = np.ones(len(user), bool)
  for _ in range(max_rounds):
    user_counts = np.bincount(user[keep], minlength=len(user) and user.max() + 1)
    item_counts = np.bincount(item[keep], minlength=len(item) and item.max() + 1)
    ok = keep & (user_counts[user] >= k) & (item_counts[item] >= k)
    if np.array_equal(ok, keep):
      break
    keep = ok
  return keep
