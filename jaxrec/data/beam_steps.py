"""The per-element steps of the Beam preparation (beam_prepare.py): plain functions over numpy
batches, so that they are tested without Beam and pickled to workers by reference.

The elements: a *batch* is (part, EventLog) -- one part of the log, rows in the log's order; a
*user group* is (user id, EVENTS array) -- some of one user's events; a *user record* is
(user id, tokens, train_end, valid_end). Ids are the vocabulary ids every engine assigns alike.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxrec.data import shards as shards_lib
from jaxrec.data import splits as splits_lib
from jaxrec.data.events import EventType, NUM_EVENT_TYPES
from jaxrec.data.tokenize import tokenize
from jaxrec.data.vocab import Vocabulary
from jaxrec.errors import UserError

# One event on its way to its user's group. (timestamp, part, row) orders a user's events as the
# local path's stable sort of the whole log by (user, timestamp) does.
EVENTS = np.dtype([("timestamp", np.int64), ("part", np.int32), ("row", np.int64),
                   ("item", np.int32), ("event", np.int32), ("value", np.float32),
                   ("device", np.int32), ("locale", np.int32)])
ID_FIELDS = ("user", "item")
CONTEXT_FIELDS = ("device", "locale")


def keep_events(batch, names: tuple[str, ...]):
  """--events: only rows of these types (all when empty)."""
  part, log = batch
  if not names:
    return batch
  keep = np.array([EventType[name.upper()] for name in names])
  return part, log.take(np.isin(np.asarray(log.event_type), keep))


def summarize(batch) -> dict:
  """What the whole log's statistics are summed from (merge_summaries)."""
  _, log = batch
  n = len(log)
  timestamp = np.asarray(log.timestamp, np.int64)
  return {"events": n,
          "by_type": np.bincount(np.asarray(log.event_type, np.int64),
                                 minlength=NUM_EVENT_TYPES).tolist() if n else
                     [0] * NUM_EVENT_TYPES,
          "time": [int(timestamp.min()), int(timestamp.max())] if n else None,
          "dtypes": {f: [np.asarray(getattr(log, f)).dtype.str] for f in ID_FIELDS} if n else
                    {f: [] for f in ID_FIELDS}}


def merge_summaries(summaries) -> dict:
  """Associative and commutative: Beam may merge partial results in any grouping."""
  out = {"events": 0, "by_type": [0] * NUM_EVENT_TYPES, "time": None,
         "dtypes": {f: [] for f in ID_FIELDS}}
  for s in summaries:
    out["events"] += s["events"]
    out["by_type"] = [a + b for a, b in zip(out["by_type"], s["by_type"])]
    if s["time"] is not None:
      out["time"] = (s["time"] if out["time"] is None else
                     [min(out["time"][0], s["time"][0]), max(out["time"][1], s["time"][1])])
    for f in ID_FIELDS:
      out["dtypes"][f] = sorted(set(out["dtypes"][f]) | set(s["dtypes"][f]))
  return out


def _strings(column, n: int) -> np.ndarray:
  return np.full(n, "") if column is None else np.asarray(column).astype(str)


def id_counts(batch):
  """((field, raw id), count) for the users, items and non-empty devices and locales."""
  _, log = batch
  n = len(log)
  columns = {"user": log.user, "item": log.item,
             "device": _strings(log.device, n), "locale": _strings(log.locale, n)}
  for field, column in columns.items():
    column = np.asarray(column)
    if field in CONTEXT_FIELDS:
      column = column[column != ""]
    if not len(column):
      continue
    counted = pc.value_counts(pa.array(column))
    for value, count in zip(counted.field("values").to_pylist(),
                            counted.field("counts").to_pylist()):
      yield (field, value), count


def distinct_ids(batch):
  """(field, raw id) of every user and item before --events: side tables are checked against
  them, as the local reader checks them against the whole log."""
  _, log = batch
  for field in ID_FIELDS:
    for value in np.unique(np.asarray(getattr(log, field))).tolist():
      yield field, value


def kcore_counts(batch):
  """((field, raw id), rows) of users and items: one k-core round's counts."""
  _, log = batch
  for field in ID_FIELDS:
    column = np.asarray(getattr(log, field))
    if len(column):
      counted = pc.value_counts(pa.array(column))
      yield from zip(((field, v) for v in counted.field("values").to_pylist()),
                     counted.field("counts").to_pylist())


def count_table(counts: list) -> dict[str, tuple[pa.Array, np.ndarray]]:
  """field -> (raw ids, their counts), for kcore_keep's vectorised lookups."""
  table = {}
  for field in ID_FIELDS:
    pairs = [(v, c) for (f, v), c in counts if f == field]
    table[field] = (pa.array([v for v, _ in pairs]), np.array([c for _, c in pairs], np.int64))
  return table


def kcore_keep(batch, table: dict, k: int):
  """The rows whose user and item each have at least k rows in `table` (one round of
  filtering.kcore_mask)."""
  part, log = batch
  keep = np.ones(len(log), bool)
  for field in ID_FIELDS:
    ids, counts = table[field]
    if not len(log):
      break
    column = np.asarray(getattr(log, field))
    index = pc.index_in(pa.array(column), value_set=ids).fill_null(-1).to_numpy()
    keep &= (index >= 0) & (np.append(counts, 0)[index] >= k)
  return (part, log) if keep.all() else (part, log.take(np.flatnonzero(keep)))


def kcore_converged(table: dict, k: int, rounds: int) -> bool:
  """After the last round, every user and item left has k rows, or the filtering stopped
  short of the fixed point the local path reaches."""
  if any(len(counts) and counts.min() < k for _, counts in table.values()):
    raise UserError(f"--kcore {k} did not reach its fixed point in the {rounds} rounds the Beam "
                    "pipeline runs (each round drops users and items with fewer than k rows, "
                    "which can leave others short): use --runner local, or a smaller k.")
  return True


def _raw_array(values: list, dtypes: list[str], field: str) -> np.ndarray:
  if len(dtypes) > 1 and len({np.dtype(d).kind for d in dtypes}) > 1:
    raise UserError(
        f"the parts of the log disagree on the type of the {field} ids: in some every id is an "
        f"integer, in others not ({', '.join(dtypes)}). Ids are compared as written: make them "
        "all integers or all text (e.g. prefix them) in every part.")
  if not values:
    return np.zeros(0, np.dtype(dtypes[0]) if dtypes else str)
  if dtypes and np.dtype(dtypes[0]).kind in "iu":
    return np.array(values, np.dtype(max(dtypes, key=lambda d: np.dtype(d).itemsize)))
  return np.array(values, dtype=str)


def build_vocabs(counts: list, summary: dict) -> dict[str, Vocabulary]:
  """The user, item (without catalogue-only items: they come last, beam_finalize adds them),
  device and locale vocabularies, ordered exactly as Vocabulary.build orders them."""
  by_field = {f: ([], []) for f in ID_FIELDS + CONTEXT_FIELDS}
  for (field, value), count in counts:
    by_field[field][0].append(value)
    by_field[field][1].append(count)
  vocabs = {}
  for field, (values, field_counts) in by_field.items():
    dtypes = summary["dtypes"].get(field, [])
    raw = _raw_array(values, dtypes, field) if field in ID_FIELDS else (
        np.array(values, dtype=str) if values else np.zeros(0, str))
    vocabs[field] = Vocabulary.from_counts(raw, np.array(field_counts, np.int64))
  return vocabs


def _context_ids(column, vocab: Vocabulary, n: int) -> np.ndarray:
  if column is None:
    return np.zeros(n, np.int32)
  column = np.asarray(column).astype(str)
  return np.where(column == "", 0, vocab.lookup(column)).astype(np.int32)


def by_user(batch, vocabs: dict[str, Vocabulary]):
  """(user id, EVENTS) for each user of a batch, ids looked up in the vocabularies."""
  part, log = batch
  n = len(log)
  if not n:
    return
  events = np.zeros(n, EVENTS)
  events["timestamp"] = np.asarray(log.timestamp, np.int64)
  events["part"] = part
  events["row"] = np.arange(n)
  events["item"] = vocabs["item"].lookup(log.item)
  events["event"] = np.asarray(log.event_type, np.int32)
  events["value"] = np.asarray(log.value).astype(np.float32)
  events["device"] = _context_ids(log.device, vocabs["device"], n)
  events["locale"] = _context_ids(log.locale, vocabs["locale"], n)
  user = vocabs["user"].lookup(log.user)
  order = np.argsort(user, kind="stable")
  user, events = user[order], events[order]
  starts = np.flatnonzero(np.r_[True, user[1:] != user[:-1]])
  for lo, hi in zip(starts.tolist(), np.r_[starts[1:], n].tolist()):
    yield int(user[lo]), events[lo:hi]


def tokenize_user(group, merge_gap: int | None):
  """(user id, tokens): the user's events in time order (ties in log order), tokenized by the
  same `tokenize` the local path runs over the whole log."""
  user, parts = group
  events = np.concatenate(list(parts))
  events = events[np.lexsort((events["row"], events["part"], events["timestamp"]))]
  tokens, _ = tokenize(np.full(len(events), user, np.int32), events["item"],
                       events["timestamp"], events["event"], events["value"],
                       events["device"], events["locale"], merge_gap)
  return user, tokens


def timestamp_counts(record):
  """(timestamp, tokens at it): the temporal split's quantiles are read off their sum."""
  _, tokens = record
  values, counts = np.unique(tokens["timestamp"], return_counts=True)
  return zip(values.tolist(), counts.tolist())


def quantile_from_counts(values: np.ndarray, counts: np.ndarray, q: float) -> float:
  """np.quantile(np.repeat(values, counts), q) (its default, linear method), bit for bit,
  without materialising the repeated array: values ascending, counts positive."""
  cumulative = np.cumsum(counts)
  n = int(cumulative[-1])
  virtual = (n - 1) * np.float64(q)
  previous = np.floor(virtual)
  gamma = virtual - previous
  lo = int(previous)
  below = np.float64(values[np.searchsorted(cumulative, lo, side="right")])
  above = np.float64(values[np.searchsorted(cumulative, min(lo + 1, n - 1), side="right")])
  diff = above - below
  return float(above - diff * (1 - gamma) if gamma >= 0.5 else below + diff * gamma)


def split_cutoffs(timestamp_counts_list: list, split: str, t1: float, t2: float):
  """(t1, t2, description) of the split: loo has no cut-offs; temporal quantiles become
  seconds exactly as splits.temporal computes them."""
  if split == "loo":
    return None, None, {"kind": "leave-one-out"}
  if 0 < t1 < 1 and 0 < t2 <= 1 and timestamp_counts_list:
    pairs = sorted(timestamp_counts_list)
    values = np.array([v for v, _ in pairs], np.int64)
    counts = np.array([c for _, c in pairs], np.int64)
    t1, t2 = (quantile_from_counts(values, counts, q) for q in (t1, t2))
  if not t1 < t2:
    raise UserError(f"temporal split needs t1 < t2, got t1={t1}, t2={t2}. Give two quantiles "
                    "(e.g. --split-times 0.8,0.9) or two increasing Unix timestamps.")
  return t1, t2, {"kind": "temporal", "t1": int(t1), "t2": int(t2)}


def split_user(record, cutoffs):
  """(user id, tokens, train_end, valid_end)."""
  user, tokens = record
  t1, t2, _ = cutoffs
  if t1 is None:
    s = splits_lib.leave_one_out(np.array([len(tokens)]))
    return user, tokens, int(s.train_end[0]), int(s.valid_end[0])
  timestamp = tokens["timestamp"]
  return user, tokens, int((timestamp < t1).sum()), int((timestamp < t2).sum())


def user_summary(record) -> tuple[int, int, int, int, int]:
  """(user id, tokens, train_end, valid_end, distinct items)."""
  user, tokens, train_end, valid_end = record
  return user, len(tokens), train_end, valid_end, len(np.unique(tokens["item"]))


def train_item_counts(record):
  _, tokens, train_end, _ = record
  items, counts = np.unique(tokens["item"][:train_end], return_counts=True)
  return zip(items.tolist(), counts.tolist())


def item_first_seen(record):
  _, tokens, _, _ = record
  order = np.lexsort((tokens["timestamp"], tokens["item"]))
  items, first = np.unique(tokens["item"][order], return_index=True)
  return zip(items.tolist(), tokens["timestamp"][order][first].tolist())


def shard_key(record, num_shards: int):
  user, tokens, _, _ = record
  return int(shards_lib.shard_of(np.array([user]), num_shards)[0]), (user, tokens)


def every_shard(num_shards: int):
  """(k, None) for every shard: a shard that no user hashes to is still written, empty."""
  return ((k, None) for k in range(num_shards))


def write_shard(group, folder: str, num_shards: int) -> dict:
  """One writer per shard: its users' records in increasing user id order (shards.py)."""
  from array_record.python import array_record_module
  k, records = group
  records = sorted((r for r in records if r is not None), key=lambda r: r[0])
  name = shards_lib.SHARD_NAME.format(k, num_shards)
  writer = array_record_module.ArrayRecordWriter(os.path.join(folder, name), "group_size:1")
  for _, tokens in records:
    writer.write(tokens.tobytes())
  writer.close()
  return {"file": name, "users": len(records), "tokens": int(sum(len(t) for _, t in records))}

