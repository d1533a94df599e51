"""Combiners of the Beam preparation. They subclass Beam's CombineFn, so this module imports
Beam: beam_prepare imports it only once a Beam runner is asked for."""

from __future__ import annotations

import apache_beam as beam
import numpy as np

USER_COLUMNS = 5  # beam_steps.user_summary: user id, tokens, train_end, valid_end, distinct items


class UserTable(beam.CombineFn):
  """Every user's beam_steps.user_summary row as one int64 array [users, 5] sorted by user id:
  the split boundaries and statistics the finalize step writes.

  A combiner rather than a million-row AsList side input: accumulators travel as arrays, not as
  a million tuples. (At 50M events the DirectRunner in multi-process mode delivered 600,000 of
  1,000,000 users' rows either way: the loss is upstream, and beam_finalize refuses it.)"""

  def create_accumulator(self) -> list:
    return []  # rows (tuples) and compacted arrays

  def add_input(self, accumulator: list, row) -> list:
    accumulator.append(row)
    return accumulator

  def merge_accumulators(self, accumulators) -> list:
    return [self._table(accumulator) for accumulator in accumulators]

  def compact(self, accumulator: list) -> list:
    return [self._table(accumulator)]

  def extract_output(self, accumulator: list) -> np.ndarray:
    table = self._table(accumulator)
    return table[np.argsort(table[:, 0], kind="stable")]

  @staticmethod
  def _table(accumulator: list) -> np.ndarray:
    rows = [r for r in accumulator if not isinstance(r, np.ndarray)]
    return np.concatenate([r for r in accumulator if isinstance(r, np.ndarray)]
                          + [np.array(rows, np.int64).reshape(-1, USER_COLUMNS)])
