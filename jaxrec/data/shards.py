"""Token shards: which file holds a user's record, what each process reads, reading records.

Tokens are split over `tokens-KKKKK-of-NNNNN.array_record` by a stable hash of the user id, so
each host of a multi-host job opens only its own files (shards k with k % processes == index)
and its memory follows its own share of the data, not the whole log's. The hash is of the
vocabulary id, which every preparation engine assigns identically, so a distributed writer can
produce the same files; it is splitmix64, not Python's `hash`, which is salted per process.
Within a shard, records are in increasing user id order: a user's place in its shard follows
from the user ids alone, with no per-record index file.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from array_record.python import array_record_module

from jaxrec.data.tokenize import TOKEN_DTYPE
from jaxrec.data.vocab import FIRST_ID
from jaxrec.errors import UserError

SHARD_NAME = "tokens-{:05d}-of-{:05d}.array_record"
# One shard per ~250k events, rounded up to a power of two so that hosts (also powers of two on
# TPU slices) divide the shards evenly: MovieLens-100K gets 1, 50M events 256.
EVENTS_PER_SHARD = 250_000
MAX_SHARDS = 1024


def default_num_shards(num_events: int) -> int:
  wanted = max(1, -(-int(num_events) // EVENTS_PER_SHARD))
  return min(MAX_SHARDS, 1 << (wanted - 1).bit_length())


def shard_of(user_ids, num_shards: int) -> np.ndarray:
  """The shard of each user id: splitmix64(id) mod num_shards, the same on every machine."""
  z = np.asarray(user_ids).astype(np.uint64)
  with np.errstate(over="ignore"):
    z = z + np.uint64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    z = z ^ (z >> np.uint64(31))
  return (z % np.uint64(num_shards)).astype(np.int32)


def decode(record: bytes) -> np.ndarray:
  return np.frombuffer(record, TOKEN_DTYPE)


def write_shards(folder: str, tokens: np.ndarray, offsets: np.ndarray,
                 num_shards: int) -> list[dict]:
  """Writes record r (user id r + 2: tokens[offsets[r]:offsets[r + 1]]) to its shard; returns
  the manifest's `shards` list."""
  if not isinstance(num_shards, (int, np.integer)) or num_shards < 1:
    raise UserError(f"--shards must be a whole number >= 1, got {num_shards!r}.")
  shard = shard_of(np.arange(len(offsets) - 1) + FIRST_ID, num_shards)
  order = np.argsort(shard, kind="stable")  # by shard, then user id
  bounds = np.concatenate([[0], np.cumsum(np.bincount(shard, minlength=num_shards))])
  listed = []
  for k in range(num_shards):
    name = SHARD_NAME.format(k, num_shards)
    records = order[bounds[k]:bounds[k + 1]]
    writer = array_record_module.ArrayRecordWriter(os.path.join(folder, name), "group_size:1")
    for r in records.tolist():
      writer.write(tokens[offsets[r]:offsets[r + 1]].tobytes())
    writer.close()
    listed.append({"file": name, "users": int(len(records)),
                   "tokens": int((offsets[records + 1] - offsets[records]).sum())})
  return listed


@dataclasses.dataclass(frozen=True)
class HostPart:
  """What one process reads. `records` are its users' record indices (user id - 2), ascending;
  `positions[j]` is record j's index in `paths` read as one concatenated source (Grain's
  ArrayRecordDataSource over the list). `host_of` [num_users] names each record's process, so a
  process can size the others' shares (evaluation pads to the largest) without reading them."""
  paths: list[str]
  records: np.ndarray
  positions: np.ndarray
  host_of: np.ndarray
  count: int

  def share_sizes(self, mask: np.ndarray | None = None,
                  weights: np.ndarray | None = None) -> np.ndarray:
    """Per process: how many records (with `mask` [num_users] true), or their summed `weights`."""
    hosts = self.host_of if mask is None else self.host_of[mask]
    if weights is not None and mask is not None:
      weights = weights[mask]
    return np.bincount(hosts, weights, minlength=self.count).astype(np.int64)


@dataclasses.dataclass(frozen=True)
class Layout:
  """Per record: its shard and its index within the shard (int32: 8 bytes a user)."""
  path: str
  paths: list[str]
  shard: np.ndarray
  index: np.ndarray

  @classmethod
  def of(cls, ds) -> "Layout":
    paths = ds.shard_paths
    shard = shard_of(np.arange(ds.num_users) + FIRST_ID, len(paths))
    counts = np.bincount(shard, minlength=len(paths))
    listed = [s.get("users") for s in ds.manifest.get("shards", [])]
    if listed and counts.tolist() != listed:
      raise UserError(f"{ds.path}: its token shards hold {listed} users, but this jaxrec places "
                      f"them as {counts.tolist()}: they were written with another user hash. "
                      "Prepare it again with `jaxrec data prepare ... --overwrite`.")
    order = np.argsort(shard, kind="stable")
    starts = np.concatenate([[0], np.cumsum(counts)])
    index = np.empty(len(shard), np.int32)
    index[order] = np.arange(len(shard)) - starts[shard[order]]
    return cls(ds.path, paths, shard, index)

  def host_part(self, index: int, count: int) -> HostPart:
    num_shards = len(self.paths)
    if not 0 <= index < count:
      raise UserError(f"process index {index} is outside 0..{count - 1}.")
    if count > num_shards:
      raise UserError(
          f"{self.path} has {num_shards} token shard(s) but this job has {count} processes: "
          f"{count - num_shards} of them would read no data. Prepare it again with "
          f"`jaxrec data prepare ... --shards N --overwrite` (data.shards in a config), N a "
          f"multiple of {count}.")
    mine = np.arange(index, num_shards, count)
    counts = np.bincount(self.shard, minlength=num_shards)
    offset = np.zeros(num_shards, np.int64)
    offset[mine] = np.concatenate([[0], np.cumsum(counts[mine])])[:-1]
    host_of = self.shard % count
    records = np.flatnonzero(host_of == index)
    if not len(records):  # a tiny dataset in many shards; evaluation pads with a user it holds
      raise UserError(f"{self.path}: the shards of process {index} of {count} hold no users "
                      f"({num_shards} shards for {len(self.shard)} users). Prepare it again with "
                      "fewer `--shards` (`--overwrite`).")
    return HostPart([self.paths[k] for k in mine], records,
                    offset[self.shard[records]] + self.index[records], host_of, count)


class TokenReader:
  """Reads users' records by record index from whichever shards hold them; each shard's file is
  opened on first use and kept (serving holds one reader for a bundle's life)."""

  def __init__(self, layout: Layout):
    self.layout = layout
    self._readers = {}

  def read(self, records) -> list[np.ndarray]:
    records = np.asarray(records, np.int64).reshape(-1)
    if len(records) and (records.min() < 0 or records.max() >= len(self.layout.shard)):
      raise UserError(f"user ids must be in {FIRST_ID}..{len(self.layout.shard) + 1}, got "
                      f"{records.min() + FIRST_ID}..{records.max() + FIRST_ID}.")
    shard, index = self.layout.shard[records], self.layout.index[records]
    out = [None] * len(records)
    for k in np.unique(shard).tolist():
      rows = np.flatnonzero(shard == k)
      if k not in self._readers:
        self._readers[k] = array_record_module.ArrayRecordReader(self.layout.paths[k])
      for row, record in zip(rows.tolist(), self._readers[k].read(index[rows].tolist())):
        out[row] = decode(record)
    return out

  def close(self) -> None:
    for reader in self._readers.values():
      reader.close()
    self._readers = {}
