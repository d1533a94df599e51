"""The event table every dataset source produces, and the fixed vocabulary of event types.

A source returns a `RawDataset`: an `EventLog` (one row per raw event, raw user/item ids as in the
source) plus item and user side tables. Everything downstream (vocabularies, tokenization, splits,
pipelines) works on this one shape, so adding a source means writing one function.
"""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from jaxrec.errors import UserError


class EventType(enum.IntEnum):
  """Event types; the value is the id stored in tokens (0 is padding)."""

  IMPRESSION = 1
  SKIP = 2
  CLICK = 3
  PLAY = 4
  PAUSE = 5
  SEEK = 6
  RATING = 7
  INTERACTION = 8
  LIKE = 9
  SHARE = 10
  FOLLOW = 11
  REPORT = 12


NUM_EVENT_TYPES = max(EventType) + 1

# How strong a signal each event type is, used to pick a merged token's "strongest action".
# Watch events (play/pause/seek) outrank a click; explicit feedback outranks watching; a report is
# the strongest signal of all, negative though it is.
STRENGTH = {
    EventType.IMPRESSION: 0,
    EventType.SKIP: 1,
    EventType.CLICK: 2,
    EventType.PLAY: 3,
    EventType.PAUSE: 3,
    EventType.SEEK: 3,
    EventType.RATING: 4,
    EventType.INTERACTION: 4,
    EventType.LIKE: 5,
    EventType.SHARE: 6,
    EventType.FOLLOW: 6,
    EventType.REPORT: 7,
}
STRENGTH_TABLE = np.zeros(NUM_EVENT_TYPES, np.int32)
for _t, _s in STRENGTH.items():
  STRENGTH_TABLE[_t] = _s


def parse_event_types(names: np.ndarray, where: str) -> np.ndarray:
  """Maps event type names (case-insensitive) to `EventType` ids, naming the first bad value."""
  by_name = {t.name.lower(): int(t) for t in EventType}
  uniques, inverse = np.unique(np.asarray(names, dtype=str), return_inverse=True)
  ids = np.empty(len(uniques), np.int8)
  for k, name in enumerate(uniques):
    key = str(name).strip().lower()
    if key not in by_name:
      row = int(np.flatnonzero(inverse == k)[0])
      raise UserError(
          f"{where}: unknown event type {name!r} (row {row + 1}). Known types: "
          f"{', '.join(sorted(by_name))}. Rename it in your data or drop the event column to "
          "treat every row as an 'interaction'.")
    ids[k] = by_name[key]
  return ids[inverse]


@dataclasses.dataclass
class EventLog:
  """Columns of raw events, all of the same length.

  `user` and `item` hold raw ids (ints or strings); `timestamp` is Unix seconds; `event_type`
  holds `EventType` ids; `value` is the event's magnitude (a rating, a watch fraction);
  `device` and `locale` are raw context strings ("" when unknown).
  """

  user: np.ndarray
  item: np.ndarray
  timestamp: np.ndarray
  event_type: np.ndarray
  value: np.ndarray
  device: np.ndarray | None = None
  locale: np.ndarray | None = None

  def __post_init__(self):
    n = len(self.user)
    for field in dataclasses.fields(self):
      column = getattr(self, field.name)
      if column is not None and len(column) != n:
        raise ValueError(f"EventLog column {field.name} has {len(column)} rows, expected {n}")

  def __len__(self) -> int:
    return len(self.user)

  def take(self, index: np.ndarray) -> EventLog:
    return EventLog(**{f.name: None if getattr(self, f.name) is None else getattr(self, f.name)[index]
                       for f in dataclasses.fields(self)})

  @staticmethod
  def concatenate(logs: list[EventLog]) -> EventLog:
    def cat(name):
      columns = [getattr(log, name) for log in logs]
      return None if any(c is None for c in columns) else np.concatenate(columns)
    return EventLog(**{f.name: cat(f.name) for f in dataclasses.fields(EventLog)})


@dataclasses.dataclass
class SideTable:
  """Side features keyed by raw id. Each column is categorical (strings) and may be multi-valued,
  with values separated by '|' (genres, title words)."""

  ids: np.ndarray
  columns: dict[str, np.ndarray]
  multi_valued: tuple[str, ...] = ()

  @staticmethod
  def empty() -> SideTable:
    return SideTable(ids=np.zeros(0, np.int64), columns={})


@dataclasses.dataclass
class RawDataset:
  name: str
  events: EventLog
  items: SideTable
  users: SideTable
  # How a generated dataset was made (the synthetic generator's config), recorded in the prepared
  # manifest so a simulator can rebuild the same world; None for real logs.
  source_config: dict | None = None
  # What reading the source assumed or dropped (a timestamp unit, exact duplicate rows), one
  # sentence each: logged by prepare and kept in the manifest.
  notes: list[str] = dataclasses.field(default_factory=list)
