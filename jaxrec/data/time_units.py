"""Epoch timestamps in seconds, milliseconds, microseconds or nanoseconds: which one a column holds.

Logs export epoch times in all four units and nothing in a number says which: 1700000000000 read
as seconds is the year 55840. A column's unit is read from the size of its largest value (today
is about 1.7e9 s, 1.7e12 ms, 1.7e15 us, 1.7e18 ns) unless the user names it, and the result is
checked to lie between 1970 and the year 9999, so a wrong unit fails with a message instead of
a traceback from datetime.
"""

from __future__ import annotations

import numpy as np

from jaxrec.errors import UserError

PER_SECOND = {"s": 1, "ms": 10**3, "us": 10**6, "ns": 10**9}
NAMES = {"s": "seconds", "ms": "milliseconds", "us": "microseconds", "ns": "nanoseconds"}
# The largest value below each bound reads as that unit. 1e11 s is the year 5138; 1e11 ms is
# 1973, so a millisecond log from any year since is above it (likewise for us and ns).
_BOUNDS = (("s", 1e11), ("ms", 1e14), ("us", 1e17))
MAX_SECONDS = 253402300799  # 9999-12-31T23:59:59Z, the last instant datetime can print


def check_unit(unit: str | None) -> str | None:
  if unit is not None and unit not in PER_SECOND:
    raise UserError(f"unknown time unit {unit!r}: use one of {', '.join(PER_SECOND)} (seconds, "
                    "milliseconds, microseconds, nanoseconds since 1970), or leave it out to "
                    "detect it from the values.")
  return unit


def detect(largest: float) -> str:
  """The unit whose range holds `largest`, the largest absolute epoch value of a column."""
  for unit, bound in _BOUNDS:
    if largest < bound:
      return unit
  return "ns"


def to_seconds(values: np.ndarray, unit: str) -> np.ndarray:
  """Floor of values / unit, as float64 for floats (checked for range before any int cast) and
  int64 for integers (exact)."""
  if values.dtype.kind == "f":
    return np.floor(values / PER_SECOND[unit])
  return np.floor_divide(values.astype(np.int64), PER_SECOND[unit])


def first_out_of_range(seconds: np.ndarray) -> tuple[int | None, int | None, int]:
  """(first negative row, first row past the year 9999, how many negative rows)."""
  negative = np.flatnonzero(seconds < 0)
  too_late = np.flatnonzero(seconds > MAX_SECONDS)
  return (int(negative[0]) if len(negative) else None,
          int(too_late[0]) if len(too_late) else None, len(negative))
