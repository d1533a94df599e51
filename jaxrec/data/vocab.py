"""Raw ids (ints or strings) to contiguous ids: 0 is padding, 1 is out-of-vocabulary.

Known ids are numbered from 2 in order of decreasing frequency (ties by raw id), so popular items
get small ids. Frequencies are kept for sampling-bias correction and popularity baselines. A saved
vocabulary reloads exactly, including the dtype of its raw ids.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

PAD = 0
OOV = 1
FIRST_ID = 2


class Vocabulary:
  """An immutable mapping raw id -> contiguous id, with per-id counts."""

  def __init__(self, raw_ids: np.ndarray, counts: np.ndarray):
    if len(raw_ids) != len(counts):
      raise ValueError("raw_ids and counts must have the same length")
    self.raw_ids = np.asarray(raw_ids)
    self.counts = np.asarray(counts, np.int64)
    self._arrow_ids = pa.array(self.raw_ids)
    if len(pc.unique(self._arrow_ids)) != len(self.raw_ids):
      raise ValueError("vocabulary raw ids must be unique")

  @classmethod
  def build(cls, values: np.ndarray, extra_ids: np.ndarray | None = None) -> Vocabulary:
    """Builds from observed values (counted); `extra_ids` adds known ids seen zero times."""
    # Arrow's hash-based counting is several times faster than np.unique's sort at 50M rows.
    counted = pc.value_counts(pa.array(np.asarray(values)))
    uniques = counted.field("values").to_numpy(zero_copy_only=False)
    counts = counted.field("counts").to_numpy().astype(np.int64)
    return cls.from_counts(uniques, counts, extra_ids)

  @classmethod
  def from_counts(cls, uniques: np.ndarray, counts: np.ndarray,
                  extra_ids: np.ndarray | None = None) -> Vocabulary:
    """Builds from distinct raw ids and their counts (however they were counted: the Beam
    pipeline sums them in a combiner), ordered exactly as `build` orders them."""
    uniques, counts = np.asarray(uniques), np.asarray(counts, np.int64)
    if uniques.dtype == object:
      uniques = uniques.astype(str)
    if extra_ids is not None and len(extra_ids):
      extra = np.setdiff1d(np.unique(ids_like(extra_ids, uniques)), uniques)
      uniques = np.concatenate([uniques, extra])
      counts = np.concatenate([counts, np.zeros(len(extra), np.int64)])
    order = np.lexsort((uniques, -counts))  # by count desc, then raw id
    return cls(uniques[order], counts[order])

  def __len__(self) -> int:
    """Size of the id space, padding and OOV included (the embedding table's row count)."""
    return len(self.raw_ids) + FIRST_ID

  @property
  def num_known(self) -> int:
    return len(self.raw_ids)

  def lookup(self, values: np.ndarray) -> np.ndarray:
    """Raw values -> ids (int32); unknown values map to OOV."""
    values = np.asarray(values)
    if len(self.raw_ids) == 0 or len(values) == 0:
      return np.full(values.shape, OOV, np.int32)
    if values.dtype.kind != self.raw_ids.dtype.kind:
      try:
        values = values.astype(self.raw_ids.dtype)
      except (TypeError, ValueError):
        return np.full(values.shape, OOV, np.int32)
    index = pc.index_in(pa.array(values), value_set=self._arrow_ids)
    return (index.fill_null(OOV - FIRST_ID).to_numpy() + FIRST_ID).astype(np.int32)

  def raw(self, ids: np.ndarray) -> np.ndarray:
    """Ids -> raw values. Padding and OOV have no raw value and raise."""
    ids = np.asarray(ids)
    if np.any(ids < FIRST_ID) or np.any(ids >= len(self)):
      raise ValueError(f"ids must lie in [{FIRST_ID}, {len(self)})")
    return self.raw_ids[ids - FIRST_ID]

  def count_table(self) -> np.ndarray:
    """Counts indexed by id (padding and OOV count zero)."""
    return np.concatenate([np.zeros(FIRST_ID, np.int64), self.counts])

  def save(self, path: str) -> None:
    with open(path, "wb") as f:
      np.savez(f, raw_ids=self.raw_ids, counts=self.counts)

  @classmethod
  def load(cls, path: str) -> Vocabulary:
    if not os.path.exists(path):
      raise FileNotFoundError(path)
    with np.load(path, allow_pickle=False) as data:
      return cls(data["raw_ids"], data["counts"])

  def __eq__(self, other) -> bool:
    return (isinstance(other, Vocabulary) and self.raw_ids.dtype == other.raw_ids.dtype
            and np.array_equal(self.raw_ids, other.raw_ids)
            and np.array_equal(self.counts, other.counts))


def ids_like(values, like: np.ndarray) -> np.ndarray:
  """`values` as ids of the same kind as `like` (integers or text). Text is widened to the
  longest id, never cut to `like`'s width: a catalogue id longer than every id in the events
  ("longid" against "ab") must stay whole, not become "lo"."""
  values = np.asarray(values)
  return values.astype(str) if like.dtype.kind == "U" else values.astype(like.dtype)

