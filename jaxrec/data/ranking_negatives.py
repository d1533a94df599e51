"""Sampled negative impressions for ranking on logs that hold only positives (e.g. MovieLens).

Each positive token gets N items its user never interacted with in any split, shown in the same
context (user, device, time, gap) with every label 0. Excluding the whole history, not only the
training part, keeps an evaluation negative from ever being a held-out positive. Only items already
in the log at the token's time are drawn (see NegativeSampler): a negative from the future would
give itself away by its age.

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
  `item_counts` (popularity sampling gives harder negatives than uniform).

  With `first_seen` (each item's first timestamp in the log, -1 for an item never seen) and the
  examples' timestamps, only items that already existed at the example's time are drawn: an item
  from the future has its age clipped to 0, which few positives have (1.7% on MovieLens-100K
  against 17% of uniform negatives over the whole catalogue), so a model would learn "age 0 =>
  negative" instead of the user's taste. Items never seen in the log have no age and are never
  available. When a user has rated every item available at that time (possible for the very first
  events of a log), that example falls back to the unrated items of the whole catalogue rather
  than failing: the only way a negative can be from the future.
  """

  def __init__(self, num_items: int, sampling: str = "uniform",
               item_counts: np.ndarray | None = None, first_seen: np.ndarray | None = None):
    if sampling not in SAMPLING:
      raise UserError(f"unknown negative sampling {sampling!r}: use one of {', '.join(SAMPLING)}.")
    self.num_known = num_items - FIRST_ID
    # Items in order of appearance: those available at time t are a prefix [0, k) of this order,
    # with k found by one search, so availability costs no per-item work per example.
    if first_seen is None:
      since = np.full(self.num_known, np.iinfo(np.int64).min)
    else:
      since = np.asarray(first_seen, np.int64)[FIRST_ID:num_items]
      since = np.where(since == -1, np.iinfo(np.int64).max, since)  # -1: never seen
    self.order = np.argsort(since, kind="stable")  # position -> item - FIRST_ID
    self.position = np.empty_like(self.order)
    self.position[self.order] = np.arange(self.num_known)
    self.since = since[self.order]
    weights = None
    if sampling == "popularity":
      weights = np.asarray(item_counts, np.float64)[FIRST_ID:num_items]
    # Without any training counts there is no popularity to follow: uniform is the only option.
    self.sampling = sampling if weights is not None and weights.sum() > 0 else "uniform"
    if self.sampling == "popularity":
      self.cumulative = np.cumsum(weights[self.order])  # unnormalised: each prefix has its total

  def sample(self, histories: list[np.ndarray], owner: np.ndarray, keys: np.ndarray, n: int,
             timestamps: np.ndarray | None = None) -> np.ndarray:
    """[len(keys), n] items, row i's outside histories[owner[i]] (item ids, any order) and, given
    `timestamps`, first seen no later than timestamps[i] where such an unrated item exists."""
    # All users at once: user s's arithmetic happens in [s * stride, (s + 1) * stride), on item
    # positions in order of appearance rather than on ids.
    stride = self.num_known + 1
    offset = np.arange(len(histories), dtype=np.int64) * stride
    items = np.concatenate([np.asarray(h, np.int64) - FIRST_ID for h in histories])
    sizes = np.array([len(h) for h in histories], np.int64)
    valid = items >= 0
    known = np.unique(self.position[items[valid]] + np.repeat(offset, sizes)[valid])
    sizes = np.bincount(known // stride, minlength=len(histories))
    free = self.num_known - sizes
    if (free <= 0).any():
      raise UserError(f"a user has interacted with all {self.num_known} items, so no unrated item "
                      "is left to sample as a negative: set negatives_per_positive=0 for this "
                      "dataset, or filter such users out when preparing it.")
    seg_start = np.concatenate([[0], np.cumsum(sizes)])
    row_offset, row_start = offset[owner], seg_start[owner]
    # Each row draws among its first `limit` positions, those available at its time; `free` of
    # them are unrated. No unrated available item: the whole catalogue (see the class doc).
    if timestamps is None:
      limit, row_free = np.full(len(keys), self.num_known), free[owner]
    else:
      limit = np.searchsorted(self.since, np.asarray(timestamps, np.int64), side="right")
      row_free = limit - (np.searchsorted(known, limit + row_offset) - row_start)
      none = row_free <= 0
      limit = np.where(none, self.num_known, limit)
      row_free = np.where(none, free[owner], row_free)
    out = np.full((len(keys), n), -1, np.int64)
    if self.sampling == "popularity":
      total = np.where(limit > 0, self.cumulative[np.maximum(limit, 1) - 1], 0)[:, None]
      lookup = np.append(known, -1)  # a miss past the end compares against -1, never a position
      for attempt in range(_ATTEMPTS):
        draw = np.minimum(np.searchsorted(self.cumulative, _uniforms(keys, n, attempt) * total,
                                          side="right"), limit[:, None] - 1)
        rated = lookup[np.searchsorted(known, draw + row_offset[:, None])] == \
            draw + row_offset[:, None]
        # A prefix without training counts has no popularity to follow: uniform below.
        take = (out < 0) & ~rated & (total > 0)
        out[take] = draw[take]
    # The r-th unrated position is r plus the number of rated positions at or before it. Rated
    # position j (0-based within its user) has `known - j` unrated ones below it, so one search
    # finds r's; r < row_free keeps it inside the row's prefix.
    below = known - (np.arange(len(known)) - np.repeat(seg_start[:-1], sizes))
    rank = np.minimum((_uniforms(keys, n, _ATTEMPTS) * row_free[:, None]).astype(np.int64),
                      row_free[:, None] - 1)
    uniform = rank + np.searchsorted(below, rank + row_offset[:, None], side="right") - \
        row_start[:, None]
    out = np.where(out < 0, uniform, out)
    return (self.order[out] + FIRST_ID).astype(np.int32)


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
