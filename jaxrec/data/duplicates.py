"""Exact duplicate rows of an event log: found so that each event counts once.

Exports repeat rows (at-least-once pipelines, two overlapping dumps pasted together). Left in,
a repeated row is a second event: merged into one token with the first, a rating of 4 and its
copy became a rating of 8. A row is a duplicate when every column we read holds exactly what an
earlier row's does; the caller drops it and reports the count. Rows that differ anywhere (another
timestamp, another value) are separate events and stay.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc


def _codes(values: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, int]:
  """(code per value, number of codes): equal values get equal codes, nulls one of their own."""
  if pa.types.is_dictionary(values.type):  # Parquet's categoricals: compare the values
    values = values.cast(values.type.value_type)
  uniques = pc.unique(values)
  codes = pc.index_in(values, value_set=uniques, skip_nulls=False)
  return pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64) + 1, len(uniques) + 1


def exact_duplicates(table: pa.Table, hints: list[np.ndarray] = ()
                     ) -> tuple[np.ndarray, np.ndarray]:
  """(rows that repeat an earlier row, ascending; the first row each one repeats).

  `hints`: numeric columns parsed from the table's (timestamps, numeric ids): equal rows have
  equal hints, so only rows whose hints collide are compared in full. Hashing every raw column
  of a log took as long as reading it."""
  candidates = _colliding(hints, table.num_rows) if len(hints) else np.arange(table.num_rows)
  if len(candidates) < 2:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  rows, firsts = _repeats(table.take(pa.array(candidates)))
  return candidates[rows], candidates[firsts]


def _colliding(hints: list[np.ndarray], n: int) -> np.ndarray:
  """Rows whose mixed hint is shared with another row (a hash: collisions only add rows)."""
  key = np.zeros(n, np.uint64)
  for hint in hints:
    hint = np.asarray(hint)
    bits = hint.view(np.int32) if hint.dtype == np.float32 else hint
    key = key * np.uint64(1_000_003) + bits.astype(np.int64).view(np.uint64)  # wraps mod 2^64
  _, inverse, counts = np.unique(key, return_inverse=True, return_counts=True)
  return np.flatnonzero(counts[inverse] > 1)


def _repeats(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
  n = table.num_rows
  key, size = np.zeros(n, np.int64), 1  # one code per distinct row so far, in [0, size)
  for column in table.columns:
    codes, count = _codes(column)
    if size * count >= 2**62:
      key, size = _codes(pa.array(key))  # renumber densely before the product overflows
    key, size = key * count + codes, size * count
  group, groups = _codes(pa.array(key))
  first = np.empty(groups, np.int64)
  first[group[::-1]] = np.arange(n)[::-1]  # numpy's last write wins: each group's first row
  rows = np.flatnonzero(first[group] != np.arange(n))
  return rows, first[group[rows]]
