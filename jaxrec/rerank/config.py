"""RerankConfig: what the re-ranking stage does, checked when it is built so a bad value fails at
service start-up rather than on the first request."""

from __future__ import annotations

import dataclasses
import math
import numbers

from jaxrec.errors import UserError


@dataclasses.dataclass(frozen=True)
class RerankConfig:
  """Re-ranking settings. Positions are 0-based list positions; one past the end appends."""
  mmr_lambda: float = 0.7  # relevance vs diversity; 1.0 turns MMR off (pure score order)
  group_cap: int | None = None  # at most this many items per group (needs groups=); None: no cap
  freshness_max_age_s: float = 86_400.0  # an item this new (in seconds) or newer is fresh
  freshness_slots: int = 0  # fresh items guaranteed (needs ages=); 0 turns freshness off
  freshness_positions: tuple[int, ...] = (3, 8)  # the i-th fresh item by position i
  explore_slots: int = 0  # exploration slots (needs posteriors=); 0 turns exploration off
  explore_max_impressions: int = 100  # items with fewer impressions may be explored
  explore_positions: tuple[int, ...] = (5, 12)
  explore_pool: int = 20  # the best-scored eligible candidates that compete for the slots
  explore_draws: int = 100  # Monte-Carlo draws estimating each explored item's propensity

  def __post_init__(self):
    # Lists from JSON or flags become tuples, so the config stays hashable and immutable.
    for name in ("freshness_positions", "explore_positions"):
      object.__setattr__(self, name, tuple(getattr(self, name)))
    lam = self.mmr_lambda
    if not _number(lam) or not 0.0 <= lam <= 1.0:
      _bad("mmr_lambda", lam, "a number between 0 and 1 (0.7 is typical; 1.0 disables MMR)")
    if self.group_cap is not None and not (_whole(self.group_cap) and self.group_cap >= 1):
      _bad("group_cap", self.group_cap, "an integer of at least 1, or None for no cap")
    age = self.freshness_max_age_s
    if not _number(age) or age < 0 or math.isinf(age):
      _bad("freshness_max_age_s", age, "a non-negative number of seconds, e.g. 86400 for a day")
    for stage in ("freshness", "explore"):
      slots = self._integer(f"{stage}_slots", 0)
      positions = getattr(self, f"{stage}_positions")
      if not all(_whole(p) and p >= 0 for p in positions):
        _bad(f"{stage}_positions", positions, "non-negative integer list positions (0 is first)")
      if len(positions) < slots:
        _bad(f"{stage}_positions", positions,
             f"one position per slot ({stage}_slots={slots}), or fewer {stage}_slots")
      if len(set(positions)) != len(positions):
        _bad(f"{stage}_positions", positions, "distinct positions")
    self._integer("explore_max_impressions", 1)
    self._integer("explore_pool", 1)
    self._integer("explore_draws", 1)
    clash = (set(self.freshness_positions[:self.freshness_slots]) &
             set(self.explore_positions[:self.explore_slots]))
    if clash:
      _bad("explore_positions", self.explore_positions,
           f"positions apart from freshness_positions (both use {sorted(clash)})")

  def _integer(self, name: str, minimum: int) -> int:
    value = getattr(self, name)
    if not _whole(value) or value < minimum:
      _bad(name, value, f"an integer of at least {minimum}")
    return value


def _number(x) -> bool:
  return isinstance(x, numbers.Real) and not isinstance(x, bool) and not math.isnan(x)


def _whole(x) -> bool:
  return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _bad(name: str, value, want: str):
  raise UserError(f"RerankConfig.{name}={value!r} is invalid: it must be {want}.")
