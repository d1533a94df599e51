"""Time-aware popularity baselines: what is popular *now*, not over the whole training log.

Forward in time (a temporal split), a list of what everyone watched in the last weeks before the
cut-off is the bar a learned model has to clear: tastes move, new items arrive, and the all-time
counts are dominated by items past their peak.

  recent_popularity    items ranked by their interactions in the last W before the request;
  decayed_popularity   every earlier interaction counts exp2(-age / half_life) at the request.

The request is the start of the evaluated window: the split's cut-off on a temporal split (t1 for
validation, t2 for test), the held-out interaction's own time on leave-one-out. Only interactions
before the evaluated split count (training tokens for validation; training and validation tokens
for test, as they are history for the trained models too), and only those before the request.
W and the half-life are chosen on validation NDCG@10 from a small grid (`window_days`,
`half_life_days`), under the same protocol as the test number; the choice and the grid's
validation scores are recorded in results.json (`selection`).
"""

from __future__ import annotations

import numpy as np

from jaxrec.data.trending import DAY, history_pool, request_times
from jaxrec.data.vocab import FIRST_ID

SELECTION_METRIC = "ndcg@10"


class _TimedPopularity:
  """Shared by the two: a grid of one setting chosen on validation (`select`), per-split scorers
  (`for_split`) whose scores depend on each user's request time."""

  setting = ""  # the name of the chosen setting, in days

  def __init__(self, grid):
    grid = tuple(float(g) for g in (grid if isinstance(grid, (tuple, list)) else (grid,)))
    if not grid or min(grid) <= 0:
      raise ValueError(f"{self.setting} needs positive values, got {grid}")
    self.grid, self.value = grid, grid[0]
    self.selection: dict = {}

  def fit(self, ds):
    self.ds, self.num_items = ds, ds.num_items
    self._pools: dict[str, tuple] = {}
    self._times: dict[str, np.ndarray] = {}
    return self

  def select(self, evaluate_valid) -> None:
    """Sets the grid value with the best validation NDCG@10; evaluate_valid() -> metrics."""
    scores = {}
    for value in self.grid:
      self.value = value
      scores[value] = float(evaluate_valid()[SELECTION_METRIC]) if len(self.grid) > 1 else None
    if len(self.grid) > 1:
      self.value = max(self.grid, key=lambda v: (scores[v], -v))  # ties: the shorter one
    self.selection = {self.setting: self.value, "chosen_on": f"valid {SELECTION_METRIC}",
                      "valid_by_" + self.setting: {f"{v:g}": s for v, s in scores.items()}}

  def report(self) -> dict:
    return {"selection": self.selection or {self.setting: self.value}}

  def for_split(self, split: str):
    if split not in self._pools:
      self._pools[split] = history_pool(self.ds, split)
      self._times[split] = request_times(self.ds, split)
    return _SplitScorer(self, split)

  def counts_at(self, stamps, items, now: float) -> np.ndarray:
    raise NotImplementedError


class _SplitScorer:
  def __init__(self, model: _TimedPopularity, split: str):
    self.model, self.split = model, split
    self._cache: dict[float, np.ndarray] = {}

  def scores(self, users: np.ndarray, seen: np.ndarray) -> np.ndarray:
    del seen  # whoever the user, only the request time matters
    stamps, items = self.model._pools[self.split]
    times = self.model._times[self.split][np.asarray(users) - FIRST_ID]
    rows = []
    for now in times:
      if now not in self._cache:
        self._cache[now] = self.model.counts_at(stamps, items, now).astype(np.float32)
      rows.append(self._cache[now])
    return np.stack(rows)


class RecentPopularity(_TimedPopularity):
  """Items by their interactions in the last W days before the request (`window_days`: the grid
  W is chosen from on validation); items equally popular in the window by their count over the
  whole history before the request (a weight below one interaction), so a short window still
  ranks a full list."""

  setting = "window_days"

  def __init__(self, window_days=(1, 3, 7, 14, 30, 60, 120)):
    super().__init__(window_days)

  def counts_at(self, stamps, items, now):
    start, stop = np.searchsorted(stamps, [now - self.value * DAY, now], side="left")
    recent = np.bincount(items[start:stop], minlength=self.num_items).astype(np.float64)
    before = np.bincount(items[:stop], minlength=self.num_items).astype(np.float64)
    return recent + 0.5 * before / (before.max(initial=0) + 1)


class DecayedPopularity(_TimedPopularity):
  """Every interaction before the request counts exp2(-age / half_life) (`half_life_days`: the
  grid the half-life is chosen from on validation)."""

  setting = "half_life_days"

  def __init__(self, half_life_days=(1, 3, 7, 14, 30, 60, 120)):
    super().__init__(half_life_days)

  def counts_at(self, stamps, items, now):
    stop = np.searchsorted(stamps, now, side="left")
    # Relative to the newest interaction, so the weights stay representable for any age.
    ages = (now - stamps[:stop]) / (self.value * DAY)
    weights = np.exp2(-(ages - ages.min(initial=0)))
    return np.bincount(items[:stop], weights=weights, minlength=self.num_items)
