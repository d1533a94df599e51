"""Sampled negative impressions for ranking on logs that hold only positives (e.g. MovieLens).

Each positive token gets N items its user never interacted with in any split, shown in the same
context (user, device, time, gap) with every label 0. Excluding the whole history, not only the
training part, keeps an evaluation negative from ever being a held-out positive.

Draws come from a counter-based hash of (key, negative slot, attempt) rather than a stateful
generator: an evaluation example's key is its index, so it gets the same negatives at every
evaluation whatever order, shard or batch it is read in.
"""

from __future__ import annotations

import numpy as np

from jaxrec.data import events as ev
from jaxrec.data.vocab import FIRST_ID
from jaxrec.errors import UserError

SAMPLING = ("uniform", "popularity")
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_ATTEMPTS = 16  # popularity draws tried before falling back to a uniform unrated item


def mix(x: np.ndarray) -> np.ndarray:
  """splitmix64's finaliser: a bijection of uint64 whose outputs pass as independent uniforms."""
  x = np.atleast_1d(np.asarray(x, np.uint64))  # array maths wraps silently; numpy scalars warn
  x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
  x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
  return x ^ (x >> np.uint64(31))


def example_keys(base: int, indices: np.ndarray) -> np.ndarray:
  """One key per example: the example's index mixed with a base (seed, split or batch draw)."""
  return mix(mix(np.uint64(base % 2**64)) ^ mix(np.asarray(indices, np.uint64) + np.uint64(1)))


def _uniforms(keys: np.ndarray, slots: int, attempt: int) -> np.ndarray:
  """[len(keys), slots] floats in [0, 1), a fixed function of (key, slot, attempt)."""
  counter = np.arange(slots, dtype=np.uint64) * np.uint64(_ATTEMPTS + 1) + np.uint64(attempt + 1)
  bits = mix(keys[:, None] + counter[None, :] * _GOLDEN)
  return (bits >> np.uint64(11)).astype(np.float64) * 2.0**-53


class NegativeSampler:
  """Draws unrated item ids (>= FIRST_ID) per example, uniformly or in proportion to
  `item_counts` (popularity sampling gives harder negatives than uniform)."""

  def __init__(self, num_items: int, sampling: str = "uniform",
               item_counts: np.ndarray | None = None):
    if sampling not in SAMPLING:
      raise UserError(f"unknown negative sampling {sampling!r}: use one of {', '.join(SAMPLING)}.")
    self.num_known = num_items - FIRST_ID
    weights = None
    if sampling == "popularity":
      weights = np.asarray(item_counts, np.float64)[FIRST_ID:num_items]
    # Without any training counts there is no popularity to follow: uniform is the only option.
    self.sampling = sampling if weights is not None and weights.sum() > 0 else "uniform"
    if self.sampling == "popularity":
      self.cdf = np.cumsum(weights) / weights.sum()

  def sample(self, histories: list[np.ndarray], owner: np.ndarray, keys: np.ndarray,
             n: int) -> np.ndarray:
    """[len(keys), n] items, row i's outside histories[owner[i]] (item ids, any order)."""
    # All users at once: user s's unrated-item arithmetic happens in [s * stride, (s + 1) * stride).
    stride = self.num_known + 1
    offset = np.arange(len(histories), dtype=np.int64) * stride
    items = np.concatenate([np.asarray(h, np.int64) - FIRST_ID + o
                            for h, o in zip(histories, offset)])
    known = np.unique(items[items - np.repeat(offset, [len(h) for h in histories]) >= 0])
    sizes = np.bincount(known // stride, minlength=len(histories))
    free = self.num_known - sizes
    if (free <= 0).any():
      raise UserError(f"a user has interacted with all {self.num_known} items, so no unrated item "
                      "is left to sample as a negative: set negatives_per_positive=0 for this "
                      "dataset, or filter such users out when preparing it.")
    row_offset = offset[owner][:, None]
    out = np.full((len(keys), n), -1, np.int64)
    if self.sampling == "popularity":
      for attempt in range(_ATTEMPTS):
        draw = np.minimum(np.searchsorted(self.cdf, _uniforms(keys, n, attempt), side="right"),
                          self.num_known - 1)
        take = (out < 0) & ~np.isin(draw + row_offset, known)
        out[take] = draw[take]
    # The r-th unrated item is r plus the number of rated items at or before it. Rated item j
    # (0-based within its user) has `known - j` unrated items below it, so one search finds r's.
    seg_start = np.concatenate([[0], np.cumsum(sizes)])
    below = known - (np.arange(len(known)) - np.repeat(seg_start[:-1], sizes))
    rank = np.minimum((_uniforms(keys, n, _ATTEMPTS) * free[owner][:, None]).astype(np.int64),
                      free[owner][:, None] - 1)
    uniform = rank + np.searchsorted(below, rank + row_offset, side="right") - \
        seg_start[owner][:, None]
    out = np.where(out < 0, uniform, out)
    return (out + FIRST_ID).astype(np.int32)


def with_negatives(tokens: np.ndarray, negatives: np.ndarray) -> np.ndarray:
  """Each token followed by copies of itself for its negatives: same context, the sampled item,
  and a bare impression (no engagement, value 0) so every ranking label is 0."""
  n = negatives.shape[1]
  out = np.repeat(tokens, 1 + n)
  slot = np.tile(np.arange(1 + n), len(tokens))
  neg = slot > 0
  out["item"][neg] = negatives.reshape(-1)
  out["event"][neg] = ev.EventType.IMPRESSION
  out["actions"][neg] = 1 << int(ev.EventType.IMPRESSION)
  out["count"][neg] = 1
  out["value"][neg] = 0
  return out
