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


def _codes(column: pa.ChunkedArray) -> np.ndarray:
  """Equal values get equal codes (nulls too): the column's values as indices into its uniques."""
  if pa.types.is_dictionary(column.type):  # Parquet's categoricals: compare the values
    column = column.cast(column.type.value_type)
  codes = pc.index_in(column, value_set=pc.unique(column), skip_nulls=False)
  return pc.fill_null(codes, -1).to_numpy(zero_copy_only=False).astype(np.int64)


def exact_duplicates(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
  """(rows that repeat an earlier row, ascending; the first row each one repeats)."""
  if table.num_rows < 2:
    return np.zeros(0, np.int64), np.zeros(0, np.int64)
  codes = [_codes(column) for column in table.columns]
  order = np.lexsort(codes[::-1])  # stable: within a group of equal rows, file order
  same = np.ones(len(order) - 1, bool)
  for c in codes:
    same &= c[order[1:]] == c[order[:-1]]
  repeat = np.concatenate([[False], same])
  group_start = np.maximum.accumulate(np.where(repeat, 0, np.arange(len(order))))
  rows, firsts = order[repeat], order[group_start[repeat]]
  by_row = np.argsort(rows)
  return rows[by_row], firsts[by_row]
