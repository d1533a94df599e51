"""Argument checks shared by the re-ranking stages, each failing with a UserError that names the
argument, so a caller wiring up a service sees which input is wrong rather than a numpy
broadcasting error three calls deeper.
"""

from __future__ import annotations

import numpy as np

from jaxrec.errors import UserError


def vector(name: str, x, n: int | None = None, dtype=None) -> np.ndarray:
  """`x` as a 1-d array (of length `n` when given)."""
  x = np.asarray(x, dtype)
  if x.ndim != 1 or (n is not None and len(x) != n):
    want = f"[{n}]" if n is not None else "1-d"
    raise UserError(f"{name} has shape {x.shape}, expected {want}: one value per candidate.")
  return x


def finite(name: str, x: np.ndarray) -> np.ndarray:
  if not np.isfinite(x).all():
    raise UserError(f"{name} contain NaN or infinite values; drop those candidates or pass "
                    "mask=False for them instead.")
  return x


def count(name: str, value, minimum: int = 0) -> int:
  """A non-negative (or at least `minimum`) integer; bools are refused as a likely mix-up."""
  if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
    raise UserError(f"{name} must be an integer, got {value!r}.")
  if value < minimum:
    raise UserError(f"{name} must be at least {minimum}, got {value}.")
  return int(value)


def mask(x, n: int) -> np.ndarray:
  """A fresh [n] bool array of allowed candidates (all of them when `x` is None)."""
  if x is None:
    return np.ones(n, bool)
  return vector("mask", x, n, bool).copy()
