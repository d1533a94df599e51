"""Baselines that can rank an item with no training interactions, from its metadata alone.

Plain popularity (training counts) can never place a new item: it has no count. These are the
fair references for a model's metadata path (issue 7's cold-start bar):

- metadata popularity: a trained item keeps its training count; an item without any gets the
  count its metadata predicts — the mean count of the trained items that share its year, times
  the same ratio for its genres (a naive-Bayes product of per-field factors). A field value no
  trained item carries says nothing, so its factor is 1.
- genre profile: the share of the user's history in each genre · the item's genres (each item's
  weight split over its genres); the recent genre profile weighs the history by recency.
Equal scores are ordered at random (see ranks_with_random_ties: ordering them by id would leak).

Both read only what a model trained at the cut-off could know: training counts and metadata.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np

from jaxrec.data.vocab import FIRST_ID
from jaxrec.eval.metrics.beyond_accuracy import genre_weights

FIELDS = ("year", "genres")


def _value_means(values: np.ndarray, counts: np.ndarray, trained: np.ndarray) -> np.ndarray:
  """[max value + 1] mean count over the trained items carrying each value (values [V] or [V, K],
  0 = padding, duplicates within an item counted once); NaN where no trained item does."""
  values = values[:, None] if values.ndim == 1 else values
  onehot = np.zeros((len(values), int(values.max(initial=0)) + 1))
  rows = np.broadcast_to(np.arange(len(values))[:, None], values.shape)
  onehot[rows, values] = 1.0
  onehot[:, 0] = 0.0
  onehot *= trained[:, None]
  carriers = onehot.sum(0)
  with np.errstate(invalid="ignore", divide="ignore"):
    return np.where(carriers > 0, (onehot * counts[:, None]).sum(0) / carriers, np.nan)


def _field_factor(values: np.ndarray, means: np.ndarray, overall: float) -> np.ndarray:
  """[V] each item's mean over its values of (value mean / overall mean); 1 where none is known."""
  values = values[:, None] if values.ndim == 1 else values
  ratio = np.where(values > 0, means[values] / overall, np.nan)
  known = ~np.isnan(ratio)
  total = np.where(known, ratio, 0.0).sum(1)
  return np.where(known.any(1), total / np.maximum(known.sum(1), 1), 1.0)


def metadata_popularity(counts: np.ndarray, metadata: dict[str, np.ndarray],
                        fields=FIELDS) -> np.ndarray:
  """[V] scores: training counts, and for items without any the count their metadata predicts
  (module docstring). `metadata[name]` is [V] or [V, K] ids, 0 = padding; absent fields skipped.
  Padding and OOV rows score 0."""
  counts = np.asarray(counts, np.float64)
  trained = counts > 0
  trained[:FIRST_ID] = False
  overall = counts[trained].mean() if trained.any() else 0.0
  predicted = np.full(len(counts), overall)
  if overall > 0:
    for name in fields:
      if name in metadata:
        values = np.asarray(metadata[name])
        predicted *= _field_factor(values, _value_means(values, counts, trained), overall)
  scores = np.where(trained, counts, predicted)
  scores[:FIRST_ID] = 0.0
  return scores


def genre_profile_scores(seen: jnp.ndarray, item_genre_weights: jnp.ndarray,
                         jitter: jnp.ndarray, half_life: float | None = None) -> jnp.ndarray:
  """[B, V]: each user's history genre shares (`seen` [B, S] item ids in time order, zero-padded
  at the end) · each item's genre weights ([V, G], rows summing to 1 or 0), plus `jitter` [V]
  (from `tie_jitter`), which orders items of equal genres at random rather than by id (see
  ranks_with_random_ties). With `half_life`, an item `half_life` tokens older than the last
  counts half as much: the recent taste, where interests drift."""
  present = seen > 0
  decay = jnp.ones(seen.shape)
  if half_life:
    age = present.sum(1, keepdims=True) - 1 - jnp.arange(seen.shape[1])[None, :]
    decay = 0.5 ** (age / half_life)
  weights = item_genre_weights[seen] * (present * decay)[..., None]  # [B, S, G]
  profile = weights.sum(1)
  profile = profile / jnp.maximum(profile.sum(-1, keepdims=True), 1e-9)
  return profile @ item_genre_weights.T + jitter[None, :]


def tie_jitter(num_items: int, seed: int = 0) -> np.ndarray:
  """[V] fixed random offsets below 1e-5: under any difference of genre shares of a history
  shorter than 50,000 items, many float32 steps above a score's rounding."""
  return np.random.default_rng(seed).random(num_items).astype(np.float32) * 1e-5


def ranks_with_random_ties(scores: np.ndarray, seed: int = 0) -> np.ndarray:
  """[V] float32 ranks of `scores` (higher score, higher rank), equal scores in a fixed random
  order. A top-k breaks ties by the lower id, and item ids follow the counts of the whole log,
  held-out periods included: ties broken by id would leak which new item gets picked later."""
  order = np.lexsort((np.random.default_rng(seed).random(len(scores)), scores))
  ranks = np.empty(len(scores), np.float32)
  ranks[order] = np.arange(len(scores), dtype=np.float32)
  return ranks


def item_genre_weights(metadata: dict[str, np.ndarray], num_items: int) -> np.ndarray:
  """[V, G] from metadata["genres"]; one all-zero column when the data has no genres."""
  if "genres" not in metadata:
    return np.zeros((num_items, 1))
  return genre_weights(metadata["genres"])
