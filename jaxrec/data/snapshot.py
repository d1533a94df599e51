"""An earlier snapshot of an event log: what the data looked like at time T.

Incremental training is measured by preparing the log as of T (the earlier run's data) and as of a
later T' (the warm-started run's): the later snapshot has new events, new users and new items.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.data.events import RawDataset, SideTable
from jaxrec.errors import UserError


def time_at_quantile(raw: RawDataset, quantile: float) -> int:
  """The Unix time before which `quantile` of the log's events happened."""
  if not 0 < quantile <= 1:
    raise UserError(f"a snapshot quantile must be in (0, 1], got {quantile}.")
  timestamps = np.asarray(raw.events.timestamp, np.int64)
  if quantile == 1:
    return int(timestamps.max()) + 1
  return int(np.quantile(timestamps, quantile, method="higher"))


def _side_rows(table: SideTable, keep_ids: np.ndarray) -> SideTable:
  if len(table.ids) == 0:
    return table
  keep = np.isin(np.asarray(table.ids).astype(str), np.asarray(keep_ids).astype(str))
  return dataclasses.replace(table, ids=np.asarray(table.ids)[keep],
                             columns={k: np.asarray(v)[keep] for k, v in table.columns.items()})


def snapshot(raw: RawDataset, until: int) -> RawDataset:
  """The events before Unix time `until`, with the catalogue and users as they were then: items
  whose first event comes later are not in it yet (catalogue items never interacted with stay)."""
  timestamps = np.asarray(raw.events.timestamp, np.int64)
  before = timestamps < until
  if not before.any():
    raise UserError(f"no event happened before {until}: the snapshot would be empty.")
  events = raw.events.take(np.flatnonzero(before))
  later_items = np.setdiff1d(np.asarray(raw.events.item), np.asarray(events.item))
  items = raw.items
  if len(items.ids):
    catalogue = np.asarray(items.ids)
    items = _side_rows(items, catalogue[~np.isin(catalogue.astype(str),
                                                 later_items.astype(str))])
  users = _side_rows(raw.users, np.unique(np.asarray(events.user)))
  return dataclasses.replace(raw, events=events, items=items, users=users)
