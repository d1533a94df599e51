"""Vectorised group arithmetic shared by data generation and re-ranking."""

from __future__ import annotations

import numpy as np


def rank_within_groups(keys: np.ndarray) -> np.ndarray:
  """For each element, how many earlier elements (in array order) share its key.

  A stable sort by key keeps array order inside each group, so an element's position in the sorted
  array minus its group's first position is that count."""
  keys = np.asarray(keys)
  order = np.argsort(keys, kind="stable")
  sorted_keys = keys[order]
  starts = np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])
  run_start = np.repeat(starts, np.diff(np.r_[starts, len(keys)]))
  ranks = np.empty(len(keys), np.int64)
  ranks[order] = np.arange(len(keys)) - run_start
  return ranks
