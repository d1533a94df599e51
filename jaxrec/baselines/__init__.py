"""Classical recommenders that keep the trained models honest: popularity, ItemKNN, UserKNN and
implicit ALS, fit on the training tokens and ranked through the same evaluation batches and metric
code as the trained models (evaluate.py), so their numbers sit beside the models' under one
protocol.

Every model has `fit(ds)` and `scores(users, seen) -> [B, num_items]`: `users` are user ids and
`seen` `[B, S]` is every item before the evaluated split (0-padded), so for the test split the
validation item is history, exactly as it is for the sequential models. BPR-MF is trained by the
one training loop instead (jaxrec/train/matrix_factorization.py).

The helpers below turn tokens and `seen` batches into the sparse user x item matrices that the
models share.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from jaxrec.data.vocab import FIRST_ID


def train_matrix(ds, binary: bool = True) -> sparse.csr_matrix:
  """[num_users, num_items] interactions of each user's training tokens (row r is user id r + 2).

  Counts repeated interactions unless `binary`; padding and OOV columns stay empty."""
  records = np.arange(ds.num_users)
  train_end = ds.splits.train_end
  tokens = ds.user_tokens(records + FIRST_ID)
  items = np.concatenate([t["item"][:n] for t, n in zip(tokens, train_end)] + [np.zeros(0, int)])
  rows = np.repeat(records, train_end)
  return _matrix(rows, items, (ds.num_users, ds.num_items), binary)


def seen_matrix(seen: np.ndarray, num_items: int, binary: bool = True) -> sparse.csr_matrix:
  """`seen` [B, S] item ids (0-padded) as a sparse [B, num_items] matrix."""
  seen = np.asarray(seen)
  keep = seen >= FIRST_ID
  rows = np.broadcast_to(np.arange(len(seen))[:, None], seen.shape)
  return _matrix(rows[keep], seen[keep], (len(seen), num_items), binary)


def _matrix(rows, cols, shape, binary: bool) -> sparse.csr_matrix:
  m = sparse.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=shape)  # duplicates are summed
  m.sum_duplicates()
  if binary:
    m.data[:] = 1.0
  return m
