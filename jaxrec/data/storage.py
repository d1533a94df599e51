"""The prepared-dataset directory: what `jaxrec data prepare` writes and every pipeline reads.

    manifest.json         format version, options, statistics, token layout
    tokens.array_record   one record per user (record r is user id r + 2): that user's
                          time-sorted tokens as raw TOKEN_DTYPE structs, read by Grain natively
    splits.npz            per-user split boundaries (see splits.py)
    vocab/*.npz           vocabularies: user, item, device, locale, and one per side feature
    item_features.npz     side features indexed by item id; user_features.npz likewise

A directory is written under a temporary name and renamed only when complete, so an interrupted
run never leaves something that looks like a finished dataset.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import shutil
import tempfile

import numpy as np
from array_record.python import array_record_module

from jaxrec.data.splits import Splits
from jaxrec.data.tokenize import TOKEN_DTYPE
from jaxrec.data.vocab import FIRST_ID, Vocabulary
from jaxrec.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
TOKENS = "tokens.array_record"


@contextlib.contextmanager
def atomic_directory(out: str, overwrite: bool = False):
  """Yields a temporary directory beside `out`, renamed to `out` only if the block succeeds."""
  out = os.path.abspath(out)
  if os.path.exists(out) and not overwrite:
    raise UserError(f"{out} already exists. Choose another --out, or pass --overwrite to replace it.")
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.incomplete-", dir=parent)
  try:
    yield tmp
    if os.path.exists(out):
      shutil.rmtree(out)
    os.rename(tmp, out)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)


def write_tokens(path: str, tokens: np.ndarray, offsets: np.ndarray) -> None:
  writer = array_record_module.ArrayRecordWriter(path, "group_size:1")
  for start, end in zip(offsets[:-1].tolist(), offsets[1:].tolist()):
    writer.write(tokens[start:end].tobytes())
  writer.close()


def decode(record: bytes) -> np.ndarray:
  return np.frombuffer(record, TOKEN_DTYPE)


def save_arrays(path: str, arrays: dict[str, np.ndarray]) -> None:
  with open(path, "wb") as f:
    np.savez(f, **arrays)


class PreparedDataset:
  """Read access to a prepared directory; checks it is complete before anything else."""

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    manifest_path = os.path.join(self.path, MANIFEST)
    if not os.path.isdir(self.path):
      raise UserError(f"{path} is not a directory. Create a dataset with "
                      "`jaxrec data prepare --dataset NAME --out DIR`.")
    if not os.path.exists(manifest_path):
      raise UserError(f"{path} has no {MANIFEST}: it is not a prepared dataset, or its "
                      "preparation did not finish. Run `jaxrec data prepare` again.")
    with open(manifest_path) as f:
      self.manifest = json.load(f)
    if self.manifest.get("format_version") != FORMAT_VERSION:
      raise UserError(f"{path} was prepared in format {self.manifest.get('format_version')}, this "
                      f"jaxrec reads format {FORMAT_VERSION}. Run `jaxrec data prepare` again.")

  @property
  def stats(self) -> dict:
    return self.manifest["stats"]

  @property
  def tokens_path(self) -> str:
    return os.path.join(self.path, TOKENS)

  @property
  def num_users(self) -> int:
    """Records in tokens.array_record: one per known user."""
    return self.stats["users"]

  @functools.cached_property
  def vocabs(self) -> dict[str, Vocabulary]:
    folder = os.path.join(self.path, "vocab")
    return {name[:-4]: Vocabulary.load(os.path.join(folder, name))
            for name in sorted(os.listdir(folder))}

  @property
  def num_items(self) -> int:
    """Item id space size, padding and OOV included."""
    return len(self.vocabs["item"])

  @functools.cached_property
  def item_counts(self) -> np.ndarray:
    """Training-token counts indexed by item id (for logQ correction and popularity)."""
    return self._load("item_counts.npz")["train"]

  @functools.cached_property
  def splits(self) -> Splits:
    data = self._load("splits.npz")
    return Splits(data["train_end"], data["valid_end"], data["length"], self.manifest["split"])

  @functools.cached_property
  def item_features(self) -> dict[str, np.ndarray]:
    return self._load("item_features.npz")

  @functools.cached_property
  def user_features(self) -> dict[str, np.ndarray]:
    return self._load("user_features.npz")

  def _load(self, name: str) -> dict[str, np.ndarray]:
    with np.load(os.path.join(self.path, name), allow_pickle=False) as data:
      return {k: data[k] for k in data.files}

  def user_tokens(self, user_ids: np.ndarray | list[int]) -> list[np.ndarray]:
    """Each user's time-sorted tokens (TOKEN_DTYPE)."""
    reader = array_record_module.ArrayRecordReader(self.tokens_path)
    try:
      return [decode(r) for r in reader.read([int(u) - FIRST_ID for u in user_ids])]
    finally:
      reader.close()
