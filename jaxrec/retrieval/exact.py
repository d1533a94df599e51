"""Brute-force maximum inner product search: the ground truth an index is measured against, and
the serving path for catalogues too small to need one.

Queries are scored in batches so the [batch, N] score matrix stays within a fixed memory budget
whatever the catalogue size. Results are ordered by score, ties by row id, so the same inputs
always give the same neighbours.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

# Bytes of scores held at once: 64 queries at a time against 1M items.
SCORE_BUDGET_BYTES = 256 * 2**20


def _batch_size(num_items: int, batch_size: int | None) -> int:
  return batch_size or max(1, SCORE_BUDGET_BYTES // (4 * max(num_items, 1)))


def exact_topk(items: np.ndarray, queries: np.ndarray, k: int,
               batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """Top-k rows of `items` [N, D] by inner product with each query [Q, D], in numpy.

  Returns (ids int64 [Q, k'], scores float32 [Q, k']) with k' = min(k, N), best first.
  """
  if k < 1:
    raise ValueError(f"k must be at least 1, got {k}")
  items = np.asarray(items, np.float32)
  queries = np.asarray(queries, np.float32)
  n = len(items)
  k = min(k, n)
  ids = np.empty((len(queries), k), np.int64)
  scores = np.empty((len(queries), k), np.float32)
  step = _batch_size(n, batch_size)
  # Buffers reused across batches and rows: a fresh [batch, N] array per batch costs more in
  # page faults than the matmul that fills it.
  buffer = np.empty((min(step, len(queries)), n), np.float32)
  scratch = np.empty(n, np.float32)
  for start in range(0, len(queries), step):
    block = queries[start:start + step]
    np.matmul(block, items.T, out=buffer[:len(block)])
    for i, row in enumerate(buffer[:len(block)], start):
      ids[i], scores[i] = _row_topk(row, k, scratch)
  return ids, scores


def _row_topk(row: np.ndarray, k: int, scratch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  # Partitioning the scores for the k-th largest value and keeping those at or above it is
  # several times faster than argpartition, which writes an int64 index for every item.
  candidates = None
  if k < len(row):
    scratch[:] = row
    scratch.partition(len(row) - k)  # in place: no copy of the row
    threshold = scratch[len(row) - k]
    candidates = np.flatnonzero(row >= threshold)  # ids ascending; ties may add a few
    if len(candidates) < k:  # NaN scores compare false
      candidates = None
  if candidates is None:
    candidates = np.arange(len(row))
  order = np.argsort(-row[candidates], kind="stable")[:k]  # score descending, then id
  return candidates[order], row[candidates[order]]


@functools.partial(jax.jit, static_argnames="k")
def _topk_block(items: jax.Array, queries: jax.Array, k: int) -> tuple[jax.Array, jax.Array]:
  scores, ids = jax.lax.top_k(queries @ items.T, k)
  return ids, scores


def exact_topk_jax(items, queries, k: int,
                   batch_size: int | None = None) -> tuple[np.ndarray, np.ndarray]:
  """`exact_topk` as a jitted matmul + `jax.lax.top_k` on the default device.

  The last batch is padded to the full batch size so one compiled program serves every batch.
  """
  if k < 1:
    raise ValueError(f"k must be at least 1, got {k}")
  items = jnp.asarray(items, jnp.float32)
  queries = np.asarray(queries, np.float32)
  k = min(k, items.shape[0])
  step = min(_batch_size(items.shape[0], batch_size), max(len(queries), 1))
  ids, scores = [], []
  for start in range(0, len(queries), step):
    block = queries[start:start + step]
    padded = np.zeros((step, queries.shape[1]), np.float32)
    padded[:len(block)] = block
    block_ids, block_scores = _topk_block(items, jnp.asarray(padded), k)
    ids.append(np.asarray(block_ids)[:len(block)])
    scores.append(np.asarray(block_scores)[:len(block)])
  if not ids:
    return np.empty((0, k), np.int64), np.empty((0, k), np.float32)
  return np.concatenate(ids).astype(np.int64), np.concatenate(scores)


def recall_per_query(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> np.ndarray:
  """[Q] fraction of each query's exact top-k that the approximate top-k also holds."""
  approx_ids = np.asarray(approx_ids)[:, :k]
  exact_ids = np.asarray(exact_ids)[:, :k]
  if exact_ids.shape[1] == 0:
    return np.full(len(exact_ids), np.nan)
  hits = [(e[:, :, None] == a[:, None, :]).any(axis=2).sum(1)
          for a, e in ((approx_ids[s:s + 1024], exact_ids[s:s + 1024])  # bounds [rows, k, k]
                       for s in range(0, len(exact_ids), 1024))]
  return (np.concatenate(hits) if hits else np.zeros(0)) / exact_ids.shape[1]


def recall_at_k(approx_ids: np.ndarray, exact_ids: np.ndarray, k: int) -> float:
  """Mean fraction of each query's exact top-k that the approximate top-k also holds."""
  per_query = recall_per_query(approx_ids, exact_ids, k)
  return float(per_query.mean()) if len(per_query) else float("nan")
