"""Neighbourhood models on the binary user x item training matrix: ItemKNN and UserKNN.

Similarity is cosine shrunk toward zero, dot / (|a| |b| + shrink) (Koren 2008): a similarity
resting on two shared users is trusted less than one resting on two hundred. Each item (user)
keeps only its `k_neighbors` most similar items (users); the rest of the similarity is noise that
costs accuracy as well as memory (Sarwar et al. 2001; Dacrema et al. 2019 tune these baselines
the same way).
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from jaxrec.baselines import seen_matrix, train_matrix
from jaxrec.data.vocab import FIRST_ID

# Rows of a dense similarity block built at once: bounds memory at catalogue sizes of 100k+.
_BLOCK_ELEMENTS = 1 << 24


def row_norms(m: sparse.csr_matrix) -> np.ndarray:
  return np.sqrt(np.asarray(m.multiply(m).sum(axis=1)).ravel())


def cosine(a: sparse.csr_matrix, b: sparse.csr_matrix, shrink: float,
           b_norms: np.ndarray | None = None) -> np.ndarray:
  """Dense [n, m] shrunk cosine similarity of the rows of `a` [n, V] and `b` [m, V]; 0 where a
  row is empty."""
  dots = (a @ b.T).toarray()
  b_norms = row_norms(b) if b_norms is None else b_norms
  denominator = row_norms(a)[:, None] * b_norms[None, :] + shrink
  return np.divide(dots, denominator, out=np.zeros_like(dots), where=denominator > 0)


def keep_top_k(similarity: np.ndarray, k: int) -> sparse.csr_matrix:
  """Each row's k largest positive entries, as a sparse matrix; ties are broken arbitrarily."""
  n, m = similarity.shape
  if k < m:
    cols = np.argpartition(-similarity, k - 1, axis=1)[:, :k]
  else:
    cols = np.broadcast_to(np.arange(m), (n, m))
  values = np.take_along_axis(similarity, cols, axis=1)
  rows = np.broadcast_to(np.arange(n)[:, None], cols.shape)
  keep = values > 0
  return sparse.csr_matrix((values[keep], (rows[keep], cols[keep])), shape=(n, m))


class ItemKNN:
  """Item-based collaborative filtering: score(u, j) = sum of sim(i, j) over the items i the user
  has seen, where only j's `k_neighbors` most similar items count (the neighbourhood of the
  candidate item, as in Dacrema et al.'s reference implementation). Defaults: the best
  validation NDCG@10 on MovieLens-100K (configs/movielens_itemknn.py)."""

  def __init__(self, k_neighbors: int = 10, shrink: float = 0.0):
    self.k_neighbors = int(k_neighbors)
    self.shrink = float(shrink)

  def fit(self, ds) -> ItemKNN:
    items = train_matrix(ds).T.tocsr()  # [V, U]: an item's row is the users who had it
    self.num_items = items.shape[0]
    norms = row_norms(items)
    block = max(1, _BLOCK_ELEMENTS // self.num_items)
    parts = []
    for start in range(0, self.num_items, block):
      stop = min(start + block, self.num_items)
      sim = cosine(items[start:stop], items, self.shrink, norms)
      # An item is not its own neighbour: it is excluded from its own ranking anyway, and would
      # take one of the k places.
      sim[np.arange(stop - start), np.arange(start, stop)] = 0
      parts.append(keep_top_k(sim, self.k_neighbors))
    # Row j holds j's neighbours; transposed, column j does, so seen @ similarity sums over them.
    self.similarity = sparse.vstack(parts).T.tocsr()
    return self

  def scores(self, users: np.ndarray, seen: np.ndarray) -> np.ndarray:
    del users  # the user is their history
    return (seen_matrix(seen, self.num_items) @ self.similarity).toarray().astype(np.float32)


class UserKNN:
  """User-based collaborative filtering: score(u, j) = sum of sim(u, v) over the `k_neighbors`
  training users v most similar to u who had j. The user is represented by `seen`, so at test
  time their validation item counts too; their own training row is never their neighbour.
  Defaults: the best validation NDCG@10 on MovieLens-100K (configs/movielens_userknn.py)."""

  def __init__(self, k_neighbors: int = 20, shrink: float = 0.0):
    self.k_neighbors = int(k_neighbors)
    self.shrink = float(shrink)

  def fit(self, ds) -> UserKNN:
    self.users = train_matrix(ds)
    self.norms = row_norms(self.users)
    return self

  def scores(self, users: np.ndarray, seen: np.ndarray) -> np.ndarray:
    queries = seen_matrix(seen, self.users.shape[1])
    sim = cosine(queries, self.users, self.shrink, self.norms)
    sim[np.arange(len(sim)), np.asarray(users) - FIRST_ID] = 0
    return (keep_top_k(sim, self.k_neighbors) @ self.users).toarray().astype(np.float32)
