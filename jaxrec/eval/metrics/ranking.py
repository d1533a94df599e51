"""Top-K ranking metrics for recommendation: full-catalogue and sampled, batched and jit-able.

Scores are `[B, V]` over the whole id space, so padding (0) and out-of-vocabulary (1) have
columns too; `mask_scores` takes them and each user's history out of the ranking. Every metric is
per row (shape `[B]`); rows without targets score 0 and the caller weights them out, which keeps
batch shapes fixed for padded final batches. `MetricAccumulator` does that weighting on the host.

Conventions:
  * Ranks are 0-based; NDCG uses binary relevance and a 1 / log2(rank + 2) discount.
  * Full ranking breaks ties by `jax.lax.top_k`'s order: the lower item id ranks first.
  * Sampled ranking counts ties as ranked above the target (pessimistic), so a model that
    scores everything alike cannot look good.
  * A target whose score is masked (at or below `NEG`) is always a miss, even when the
    catalogue is smaller than k and top-k reaches into masked items.
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.data.vocab import FIRST_ID
from jaxrec.errors import UserError
from jaxrec.eval.protocols import NO_HISTORY, WITH_HISTORY

KS = (10, 20)
# The eval-step output key holding each row's top LIST_K item ids (0 = none), for the
# beyond-accuracy metrics of the lists (lists.py); it is not a per-row metric.
TOP_ITEMS = "top_items"
LIST_K = 10
# The eval-step output key saying whether each row's user had any interaction before the
# evaluated window ([B] bool); MetricAccumulator(by_history=True) reports the two groups apart.
HAS_HISTORY = "has_history"
# Finite rather than -inf so sums or differences of masked scores never make NaN; `top_k`
# compares it like any other number.
NEG = -1e30


def _neg(dtype) -> jax.Array:
  # -1e30 overflows float16 to -inf; half the dtype's minimum is finite for every float type.
  return jnp.maximum(jnp.asarray(NEG, jnp.float32), jnp.finfo(dtype).min / 2).astype(dtype)


def mask_scores(scores: jax.Array, exclude: jax.Array | None) -> jax.Array:
  """Sets padding, OOV and every id in `exclude` (`[B, H]`, 0 = padding) to a large negative.
  `exclude` None masks padding and OOV only: the protocol with nothing excluded
  (eval.exclude_seen=False, eval/protocols.py)."""
  neg = _neg(scores.dtype)
  scores = scores.at[:, :FIRST_ID].set(neg)
  if exclude is None:
    return scores
  rows = jnp.arange(scores.shape[0])[:, None]
  # Padding entries scatter onto id 0, which is masked anyway.
  return scores.at[rows, exclude].set(neg)


def has_history(inputs: jax.Array) -> jax.Array:
  """[B] whether each row's history window (left-padded `inputs` [B, L]) holds any item."""
  return inputs[:, -1] != 0


def _discounts(k: int) -> jax.Array:
  return 1.0 / jnp.log2(jnp.arange(k, dtype=jnp.float32) + 2.0)


def _num_distinct_targets(targets: jax.Array) -> jax.Array:
  # A repeated target (the same item bought twice in the test window) is one relevant item;
  # counting it twice would cap recall below 1.
  ordered = jnp.sort(targets, axis=-1)
  new = jnp.concatenate([jnp.ones_like(ordered[:, :1], bool), ordered[:, 1:] != ordered[:, :-1]],
                        axis=-1)
  return jnp.sum(new & (ordered != 0), axis=-1)


def topk_metrics(scores: jax.Array, targets: jax.Array, ks: Sequence[int] = KS,
                 list_k: int | None = None) -> dict[str, jax.Array]:
  """Recall@k, NDCG@k and MRR@k per row for already-masked `scores` `[B, V]`.

  `targets` is `[B, T]` item ids, 0 = padding: leave-one-out has T == 1, a temporal split has
  several. Recall is hits / distinct targets (HR@k when T == 1); IDCG counts min(targets, k)
  ideal positions; MRR is 1 / (rank of the first hit + 1) within the top k. An OOV target (1)
  counts as a target that can never be hit. With `list_k`, TOP_ITEMS holds each row's first
  `list_k` ranked ids ([B, list_k], 0 where only masked items were left), from the same top_k.
  """
  targets = jnp.asarray(targets, jnp.int32)
  # A catalogue smaller than k ranks everything.
  top = min(max(max(ks), list_k or 0), scores.shape[-1])
  top_scores, top_ids = jax.lax.top_k(scores, top)
  valid = top_scores > _neg(scores.dtype)  # masked items fill the tail of a tiny catalogue
  matches = (top_ids[:, :, None] == targets[:, None, :]) & (targets[:, None, :] != 0)
  relevant = jnp.any(matches, axis=-1) & valid  # [B, top]
  num_targets = _num_distinct_targets(targets)
  ideal = jnp.concatenate([jnp.zeros(1), jnp.cumsum(_discounts(max(ks)))])
  gains = relevant * _discounts(top)
  first_hit = jnp.argmax(relevant, axis=-1)
  any_hit = jnp.any(relevant, axis=-1)
  denominator = jnp.maximum(num_targets, 1).astype(jnp.float32)
  out = {}
  for k in ks:
    hits = jnp.sum(relevant[:, :k], axis=-1)
    out[f"recall@{k}"] = hits / denominator
    idcg = ideal[jnp.minimum(num_targets, k)]
    out[f"ndcg@{k}"] = jnp.sum(gains[:, :k], axis=-1) / jnp.where(idcg > 0, idcg, 1.0)
    out[f"mrr@{k}"] = jnp.where(any_hit & (first_hit < k), 1.0 / (first_hit + 1.0), 0.0)
  if list_k:
    out[TOP_ITEMS] = jnp.where(valid, top_ids, 0)[:, :list_k]
  return out


def sampled_metrics(scores: jax.Array, targets: jax.Array, negatives: jax.Array,
                    ks: Sequence[int] = KS) -> dict[str, jax.Array]:
  """The sampled protocol: each row's one target (`[B]`, 0 = padding) ranked against its
  `negatives` (`[B, N]` ids, 0 = padding) only. Keys are prefixed "sampled_".

  The rank is the number of negatives scoring at least as high as the target: ties count
  against the target. Scores may be raw or masked; a target whose score is masked is a miss.
  """
  targets = jnp.asarray(targets, jnp.int32)
  negatives = jnp.asarray(negatives, jnp.int32)
  target_score = jnp.take_along_axis(scores, targets[:, None], axis=-1)
  negative_scores = jnp.take_along_axis(scores, negatives, axis=-1)
  counted = (negatives != 0) & (negatives != targets[:, None])
  rank = jnp.sum(counted & (negative_scores >= target_score), axis=-1)
  rankable = (targets != 0) & (target_score[:, 0] > _neg(scores.dtype))
  out = {}
  for k in ks:
    hit = rankable & (rank < k)
    out[f"sampled_recall@{k}"] = hit.astype(jnp.float32)
    out[f"sampled_ndcg@{k}"] = jnp.where(hit, 1.0 / jnp.log2(rank + 2.0), 0.0)
    out[f"sampled_mrr@{k}"] = jnp.where(hit, 1.0 / (rank + 1.0), 0.0)
  return out


_ROWS_PER_CHUNK = 4096  # bounds the candidate arrays at catalogue sizes of millions
_ROUNDS = 4  # rejection rounds, each doubling the draws, before a row falls back to exact sampling


def draw_negatives(num_items: int, histories: Sequence[np.ndarray], targets: np.ndarray,
                   n: int = 100, *, by: str = "uniform", counts: np.ndarray | None = None,
                   seed: int = 0) -> np.ndarray:
  """For each row, `n` distinct ids in [2, num_items) outside that row's history and target(s).

  `num_items` is the id space size (`len(vocab)`); `targets` is `[R]` or `[R, T]`. `by` is
  "uniform" or "popularity" (probability proportional to `counts[id]`, e.g.
  `vocab.count_table()`; zero-count items are never drawn). Each row is sampled without
  replacement, distributed as drawing one id at a time and skipping repeats and excluded ids.
  Fixed `seed`, fixed output: draw once per evaluation set.
  Returns `[R, n]` int32.
  """
  if by not in ("uniform", "popularity"):
    raise UserError(f"unknown negative sampling {by!r}: use 'uniform' or 'popularity'.")
  if n < 0:
    raise UserError(f"the number of negatives must be non-negative, got {n}.")
  targets = np.asarray(targets)
  targets = targets[:, None] if targets.ndim == 1 else targets
  if len(histories) != len(targets):
    raise ValueError(f"{len(histories)} histories but {len(targets)} target rows")
  weights = None
  if by == "popularity":
    if counts is None:
      raise UserError("popularity negative sampling needs item counts (vocab.count_table()).")
    counts = np.asarray(counts, np.float64)
    if counts.ndim != 1 or len(counts) < num_items or np.any(counts[FIRST_ID:num_items] < 0):
      raise UserError(f"popularity counts must be non-negative and cover all {num_items} ids, "
                      f"got shape {counts.shape}.")
    weights = counts[FIRST_ID:num_items]
  rng = np.random.default_rng(seed)
  out = np.empty((len(targets), n), np.int32)
  for start in range(0, len(targets), _ROWS_PER_CHUNK):
    stop = min(start + _ROWS_PER_CHUNK, len(targets))
    out[start:stop] = _draw_chunk(num_items, histories[start:stop], targets[start:stop], n,
                                  weights, rng, start)
  return out


def _draw_chunk(num_items, histories, targets, n, weights, rng, first_row):
  rows = len(targets)
  # Forbidden (row, id) pairs as sorted keys row * num_items + id, for a vectorised lookup.
  forbidden_ids = np.concatenate([np.asarray(h, np.int64).ravel() for h in histories]
                                 + [targets.astype(np.int64).ravel()])
  forbidden_rows = np.concatenate([np.full(np.size(h), r, np.int64)
                                   for r, h in enumerate(histories)]
                                  + [np.repeat(np.arange(rows), targets.shape[1])])
  in_range = (forbidden_ids >= FIRST_ID) & (forbidden_ids < num_items)
  forbidden = np.unique(forbidden_rows[in_range] * num_items + forbidden_ids[in_range])
  _check_enough(num_items, forbidden, rows, n, weights, first_row)
  if n == 0:
    return np.empty((rows, 0), np.int32)

  cdf = None if weights is None else np.cumsum(weights)

  def draw(shape):
    if cdf is None:
      return rng.integers(FIRST_ID, num_items, size=shape)
    # side="right" skips zero-count items: their cdf step has no width.
    picked = np.searchsorted(cdf, rng.random(shape) * cdf[-1], side="right")
    return np.minimum(picked, len(cdf) - 1) + FIRST_ID

  out = np.empty((rows, n), np.int32)
  pending = np.arange(rows)
  candidates = np.empty((rows, 0), np.int64)
  width = n + max(n, 16)
  for _ in range(_ROUNDS):
    # Appending to each row's stream (rather than redrawing) keeps the sample exactly
    # "first n distinct allowed draws", however many rounds a row needs.
    candidates = np.concatenate([candidates, draw((len(pending), width - candidates.shape[1]))],
                                axis=1)
    keep = _first_allowed(candidates, pending, forbidden, num_items)
    taken = np.cumsum(keep, axis=1)
    done = taken[:, -1] >= n
    chosen = keep & (taken <= n) & done[:, None]
    out[pending[done]] = candidates[chosen].reshape(-1, n)
    pending, candidates = pending[~done], candidates[~done]
    if not len(pending):
      return out
    width *= 2
  # Rows whose history covers most of the catalogue (or its popular part): sample exactly.
  for r in pending:
    lo, hi = np.searchsorted(forbidden, [r * num_items, (r + 1) * num_items])
    allowed = np.setdiff1d(np.arange(FIRST_ID, num_items), forbidden[lo:hi] - r * num_items,
                           assume_unique=True)
    p = None if weights is None else weights[allowed - FIRST_ID] / weights[allowed - FIRST_ID].sum()
    out[r] = rng.choice(allowed, n, replace=False, p=p)
  return out


def _first_allowed(candidates, rows, forbidden, num_items):
  """Marks each candidate that is not forbidden for its row and not a repeat of an earlier one."""
  keys = rows[:, None] * num_items + candidates
  at = np.minimum(np.searchsorted(forbidden, keys), max(len(forbidden) - 1, 0))
  banned = forbidden[at] == keys if len(forbidden) else np.zeros(keys.shape, bool)
  order = np.argsort(candidates, axis=1, kind="stable")  # stable: the first draw leads its repeats
  ordered = np.take_along_axis(candidates, order, axis=1)
  repeat = np.zeros(candidates.shape, bool)
  np.put_along_axis(repeat, order[:, 1:], ordered[:, 1:] == ordered[:, :-1], axis=1)
  return ~banned & ~repeat


def _check_enough(num_items, forbidden, rows, n, weights, first_row):
  forbidden_row = forbidden // num_items
  if weights is None:
    drawable = num_items - FIRST_ID
    used = np.bincount(forbidden_row, minlength=rows)
  else:
    positive = weights > 0
    drawable = int(positive.sum())
    used = np.bincount(forbidden_row, weights=positive[forbidden % num_items - FIRST_ID],
                       minlength=rows)
  available = drawable - used
  if np.any(available < n):
    row = int(np.argmax(available < n))
    what = "items" if weights is None else "items with a non-zero count"
    raise UserError(f"cannot draw {n} negatives for row {first_row + row}: only "
                    f"{int(available[row])} of the {drawable} {what} are outside its history and "
                    f"targets. Ask for fewer negatives.")


class MetricAccumulator:
  """Host-side running weighted means of per-row metrics.

  Weights are 0 for padded rows (a final batch filled up to a fixed shape) and 1 for real ones;
  padded rows' values are ignored even when they are NaN. A HAS_HISTORY entry of the per-row
  metrics is no metric: with `by_history` it splits the rows into users with and without history
  before the window, whose means are reported as well, under `with_history/` and `no_history/`
  (protocols.WITH_HISTORY, NO_HISTORY); without, it is dropped.
  """

  def __init__(self, by_history: bool = False):
    self.by_history = by_history
    self._sums: dict[str, float] = {}
    self._weight = 0.0
    self._groups = ({WITH_HISTORY: MetricAccumulator(), NO_HISTORY: MetricAccumulator()}
                    if by_history else {})

  def add(self, per_row_metrics: dict[str, jax.Array | np.ndarray],
          weight: jax.Array | np.ndarray) -> None:
    per_row_metrics = dict(per_row_metrics)
    history = per_row_metrics.pop(HAS_HISTORY, None)
    weight = np.asarray(weight, np.float64)
    if self._groups:
      if history is None:
        raise ValueError(f"by_history needs the per-row {HAS_HISTORY!r} of each batch")
      history = np.asarray(history, bool)
      self._groups[WITH_HISTORY].add(per_row_metrics, np.where(history, weight, 0.0))
      self._groups[NO_HISTORY].add(per_row_metrics, np.where(history, 0.0, weight))
    if self._sums and set(per_row_metrics) != set(self._sums):
      raise ValueError(f"metric keys changed: {sorted(per_row_metrics)} vs {sorted(self._sums)}")
    for name, values in per_row_metrics.items():
      values = np.asarray(values, np.float64)
      if values.shape != weight.shape:
        raise ValueError(f"{name} has shape {values.shape}, weight has {weight.shape}")
      # where, not multiply: 0 * NaN from a padded row would poison the sum.
      contribution = float(np.sum(np.where(weight > 0, values * weight, 0.0)))
      self._sums[name] = self._sums.get(name, 0.0) + contribution
    self._weight += float(weight.sum())

  def result(self) -> dict[str, float]:
    """Means per metric (NaN when nothing was weighted in) plus "num_users", the total weight;
    with by_history, each group's means (left out for a group without users) and num_users."""
    out = {name: total / self._weight if self._weight > 0 else float("nan")
           for name, total in self._sums.items()}
    out["num_users"] = self._weight
    for group, accumulator in self._groups.items():
      part = accumulator.result()
      if not part["num_users"]:  # no NaN means in a JSON report
        part = {"num_users": 0.0}
      out.update({f"{group}/{name}": value for name, value in part.items()})
    return out
