"""Beta posteriors of each item's engagement rate, for Thompson-sampling exploration of items
with few impressions.

Item i's rate has posterior Beta(alpha0 + engagements_i, beta0 + impressions_i - engagements_i).
The counts live in numpy arrays indexed by item id, sized to the catalogue (8 bytes per item per
count, so 16 MB per million items), which makes a request's lookup one gather.

One instance is shared by a serving process: feedback handlers `update` it while request threads
`sample` from it, so every access holds a lock. Sampling copies the parameters under the lock
and draws outside it, keeping the lock's hold time to a gather.

Feedback comes from outside, so counts are bounded: one row adds at most MAX_INCREMENT, and a
count saturates at MAX_COUNT (exact in float64, far from int64's limit). Saturating both counts
keeps engagements <= impressions, so Beta's parameters stay positive whatever is sent.

These counts live in one process. jaxrec/serve/posterior_store.py keeps them in Redis instead,
shared by replicas, with the same checks (summed_feedback) and draws (beta_draws).
"""

from __future__ import annotations

import threading

import numpy as np

from jaxrec.errors import UserError
from jaxrec.rerank import checks

MAX_INCREMENT = 1_000_000  # impressions or engagements one feedback row may add
MAX_COUNT = 2**53  # a count saturates here


def summed_feedback(items: np.ndarray, impressions, engagements) -> tuple[np.ndarray, np.ndarray]:
  """Checked feedback rows summed per item: (unique ids [U], counts [2, U] of impressions and
  engagements), each sum at most len(items) * MAX_INCREMENT, so no int64 overflow."""
  impressions = checks.vector("impressions", impressions, len(items))
  engagements = checks.vector("engagements", engagements, len(items))
  for name, x in (("impressions", impressions), ("engagements", engagements)):
    if not np.issubdtype(x.dtype, np.integer) and len(x):
      raise UserError(f"{name} must be integer counts, got dtype {x.dtype}.")
  if (impressions < 0).any() or (engagements < 0).any() or (engagements > impressions).any():
    raise UserError("each feedback row needs 0 <= engagements <= impressions; an engagement "
                    "without its impression must count the impression too.")
  if len(impressions) and impressions.max() > MAX_INCREMENT:
    raise UserError(f"a feedback row adds at most {MAX_INCREMENT:,} impressions, got "
                    f"{impressions.max():,}; send larger counts as several rows.")
  unique, index = np.unique(items, return_inverse=True)
  added = np.zeros((2, len(unique)), np.int64)
  np.add.at(added, (0, index), impressions)  # add.at: repeated ids all count
  np.add.at(added, (1, index), engagements)
  return unique, added


def beta_draws(shown, engaged, alpha0: float, beta0: float, rng: np.random.Generator,
               draws: int | None = None) -> np.ndarray:
  """Thompson draws from Beta(alpha0 + engaged, beta0 + shown - engaged): [B] or [draws, B]."""
  alpha = alpha0 + engaged
  beta = beta0 + (shown - engaged)
  size = None if draws is None else (checks.count("draws", draws, 1), len(shown))
  return rng.beta(alpha, beta, size)


class BetaPosteriors:
  """Per-item Beta(alpha, beta) posteriors of engagement, for item ids 0..num_items-1."""

  def __init__(self, num_items: int, alpha0: float = 1.0, beta0: float = 1.0):
    num_items = checks.count("num_items", num_items)
    if not (alpha0 > 0 and beta0 > 0):
      raise UserError(f"alpha0 and beta0 must be positive, got {alpha0} and {beta0}; "
                      "1 and 1 is the uniform prior.")
    self.alpha0, self.beta0 = float(alpha0), float(beta0)
    self._impressions = np.zeros(num_items, np.int64)
    self._engagements = np.zeros(num_items, np.int64)
    self._lock = threading.Lock()

  @property
  def num_items(self) -> int:
    return len(self._impressions)

  def update(self, items, impressions, engagements) -> None:
    """Add feedback: items [B] ids (repeats allowed), impressions and engagements [B] counts."""
    unique, added = summed_feedback(self._ids(items), impressions, engagements)
    with self._lock:
      for counts, more in ((self._impressions, added[0]), (self._engagements, added[1])):
        counts[unique] = np.minimum(counts[unique] + more, MAX_COUNT)

  def impressions(self, items) -> np.ndarray:
    items = self._ids(items)
    with self._lock:
      return self._impressions[items]

  def engagements(self, items) -> np.ndarray:
    items = self._ids(items)
    with self._lock:
      return self._engagements[items]

  def sample(self, items, rng: np.random.Generator, draws: int | None = None) -> np.ndarray:
    """Thompson draws of the items' engagement rates: [B], or [draws, B] when draws is given."""
    items = self._ids(items)
    with self._lock:
      shown, engaged = self._impressions[items], self._engagements[items]
    return beta_draws(shown, engaged, self.alpha0, self.beta0, rng, draws)

  def for_catalogue(self, item_keys) -> BetaPosteriors:
    """The posteriors a bundle with these items (raw ids by item id) reads: here, this object
    grown to hold them (a shared store returns a view that keys its counts by raw id)."""
    self.grow(len(item_keys))
    return self

  def grow(self, num_items: int) -> None:
    """Make room for item ids up to num_items - 1, as the catalogue gains items."""
    with self._lock:
      extra = checks.count("num_items", num_items) - len(self._impressions)
      if extra > 0:
        self._impressions = np.concatenate([self._impressions, np.zeros(extra, np.int64)])
        self._engagements = np.concatenate([self._engagements, np.zeros(extra, np.int64)])

  def state_dict(self) -> dict:
    """Copies of the counts and the prior, for saving (e.g. np.savez(path, **state))."""
    with self._lock:
      return {"alpha0": np.float64(self.alpha0), "beta0": np.float64(self.beta0),
              "impressions": self._impressions.copy(), "engagements": self._engagements.copy()}

  @classmethod
  def from_state_dict(cls, state) -> BetaPosteriors:
    missing = {"alpha0", "beta0", "impressions", "engagements"} - set(state)
    if missing:
      raise UserError(f"posterior state lacks {sorted(missing)}; pass what state_dict() returned.")
    impressions = checks.vector("impressions", state["impressions"], dtype=np.int64)
    engagements = checks.vector("engagements", state["engagements"], len(impressions), np.int64)
    posteriors = cls(len(impressions), float(state["alpha0"]), float(state["beta0"]))
    posteriors._impressions[:] = impressions
    posteriors._engagements[:] = engagements
    return posteriors

  def _ids(self, items) -> np.ndarray:
    # Reading the length outside the lock is safe: grow() only ever makes it larger.
    return checked_ids(items, len(self._impressions),
                       "; call grow(num_items) when the catalogue gains items")


def checked_ids(items, num_items: int, hint: str = "") -> np.ndarray:
  """`items` as int64 item ids in [0, num_items), or a UserError saying what is wrong."""
  items = checks.vector("items", items)
  if len(items) and not np.issubdtype(items.dtype, np.integer):
    raise UserError(f"items must be integer item ids, got dtype {items.dtype}.")
  if len(items) and (items.min() < 0 or items.max() >= num_items):
    raise UserError(f"item ids must be in [0, {num_items}), got [{items.min()}, {items.max()}]"
                    f"{hint}.")
  return items.astype(np.int64, copy=False)
