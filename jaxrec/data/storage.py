"""The prepared-dataset directory: what `jaxrec data prepare` writes and every pipeline reads.

    manifest.json         format version, options, statistics, token layout, the token shards
    tokens-00000-of-000NN.array_record
                          one record per user: that user's time-sorted tokens as raw TOKEN_DTYPE
                          structs, read by Grain natively. User id u (record u - 2) lives in shard
                          shard_of(u, NN), in increasing id order within its shard (see shards.py)
    splits.npz            per-user split boundaries (see splits.py)
    vocab/*.npz           vocabularies: user, item, device, locale, and one per side feature
    item_features.npz     side features indexed by item id; user_features.npz likewise

A directory is written under a temporary name and renamed only when complete, so an interrupted
run never leaves something that looks like a finished dataset. The manifest lists every other file
with its size, and the reader refuses a directory where one is missing or has another size.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import logging
import secrets
import shutil
import socket

import numpy as np

from jaxrec.data import shards as shards_lib
from jaxrec.data.shards import decode  # noqa: F401  (re-exported: readers import it from here)
from jaxrec.data.splits import Splits
from jaxrec.data.vocab import FIRST_ID, Vocabulary
from jaxrec.errors import UserError

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
# The single token file of directories prepared before the sharded layout (read as one shard).
TOKENS = "tokens.array_record"
# What every prepared directory holds; checked when a manifest predates its `files` list.
CORE_FILES = (TOKENS, "splits.npz", "item_counts.npz", "item_features.npz", "user_features.npz",
              "vocab/user.npz", "vocab/item.npz")

logger = logging.getLogger(__name__)


# Temporary names beside the output: `.NAME.incomplete-HOST-PID-RANDOM` while writing,
# `.NAME.replaced-HOST-PID-RANDOM` for the old copy during an --overwrite. The owner in the name
# lets the next prepare delete what a killed run left without touching a run still going.
_SCRATCH = ("incomplete", "replaced")


def _scratch_name(out: str, kind: str) -> str:
  return os.path.join(os.path.dirname(out), f".{os.path.basename(out)}.{kind}-"
                      f"{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(4)}")


def remove_stale(out: str) -> None:
  """Deletes scratch directories of `out` left by runs that were killed; logs, but keeps, those
  of runs on other hosts, which may still be writing."""
  parent, base = os.path.split(out)
  for name in os.listdir(parent):
    kind = next((k for k in _SCRATCH if name.startswith(f".{base}.{k}-")), None)
    if kind is None:
      continue
    owner = name[len(f".{base}.{kind}-"):]
    host, pid = _owner(owner)
    if host == socket.gethostname() and _alive(pid):
      continue  # another prepare of the same output, still running
    if host is not None and host != socket.gethostname():
      logger.warning("%s: left by a prepare on host %s; delete it if nothing is preparing %s "
                     "there.", os.path.join(parent, name), host, out)
      continue
    logger.warning("removing %s, left by an interrupted prepare", os.path.join(parent, name))
    shutil.rmtree(os.path.join(parent, name), ignore_errors=True)


def _owner(owner: str) -> tuple[str | None, int | None]:
  """(host, pid) of a HOST-PID-RANDOM suffix; (None, None) for an older jaxrec's mkdtemp suffix,
  which recorded no owner: such a run is long gone."""
  parts = owner.rsplit("-", 2)
  if len(parts) != 3 or not parts[1].isdigit():
    return None, None
  return parts[0], int(parts[1])


def _alive(pid: int) -> bool:
  try:
    os.kill(pid, 0)
  except ProcessLookupError:
    return False
  except PermissionError:
    return True  # another user's process
  return True


@contextlib.contextmanager
def atomic_directory(out: str, overwrite: bool = False):
  """Yields a temporary directory beside `out`, renamed to `out` only if the block succeeds.

  An existing `out` is renamed aside before the new one is renamed in, and deleted after: a run
  killed at any point leaves either the old dataset or the new one at `out`, never half of one
  (deleting it in place left a manifest without vocab/ when killed). Created with os.mkdir, so
  the directory follows the umask like any other (mkdtemp's is 0700)."""
  if "://" in out:  # os.path would make gs://b/x a local ./gs:/b/x, silently
    raise UserError(f"{out}: URLs ({out.split('://')[0]}://) are not supported as an output "
                    "directory yet: write to a local directory, or one every machine mounts "
                    "(gcsfuse, NFS), and copy it to the bucket after (gsutil -m cp -r).")
  out = os.path.abspath(out)
  parent = os.path.dirname(out)
  os.makedirs(parent, exist_ok=True)
  remove_stale(out)
  if os.path.exists(out) and not overwrite:
    raise UserError(f"{out} already exists. Choose another --out, or pass --overwrite to replace it.")
  tmp = _scratch_name(out, "incomplete")
  os.mkdir(tmp)
  try:
    yield tmp
    if os.path.exists(out):
      old = _scratch_name(out, "replaced")
      os.rename(out, old)
      try:
        os.rename(tmp, out)
      except BaseException:
        os.rename(old, out)  # keep the old dataset rather than none
        raise
      shutil.rmtree(old)  # if killed here, the next prepare removes what is left
    else:
      os.rename(tmp, out)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)


def save_arrays(path: str, arrays: dict[str, np.ndarray]) -> None:
  with open(path, "wb") as f:
    np.savez(f, **arrays)


def file_sizes(folder: str) -> dict[str, int]:
  """Size of every file under `folder` by '/'-separated relative path: the manifest's `files`."""
  sizes = {}
  for root, _, names in os.walk(folder):
    for name in names:
      path = os.path.join(root, name)
      sizes[os.path.relpath(path, folder).replace(os.sep, "/")] = os.path.getsize(path)
  return dict(sorted(sizes.items()))


def read_manifest(path: str) -> dict:
  """A prepared directory's manifest, once it is known to be one this jaxrec reads (what was
  prepared, from what source), without opening or checking its files."""
  manifest_path = os.path.join(path, MANIFEST)
  if not os.path.isdir(path):
    raise UserError(f"{path} is not a directory. Create a dataset with "
                    "`jaxrec data prepare --dataset NAME --out DIR`.")
  if not os.path.exists(manifest_path):
    raise UserError(f"{path} has no {MANIFEST}: it is not a prepared dataset, or its "
                    "preparation did not finish. Run `jaxrec data prepare` again.")
  with open(manifest_path) as f:
    manifest = json.load(f)
  if manifest.get("format_version") != FORMAT_VERSION:
    raise UserError(f"{path} was prepared in format {manifest.get('format_version')}, this "
                    f"jaxrec reads format {FORMAT_VERSION}. Run `jaxrec data prepare` again.")
  return manifest


class PreparedDataset:
  """Read access to a prepared directory; checks it is complete before anything else."""

  def __init__(self, path: str):
    self.path = os.path.abspath(path)
    self.manifest = read_manifest(path)
    self._check_files()

  def _check_files(self) -> None:
    """Refuses a directory that lost a file after it was written (a partial copy, a deletion, an
    --overwrite killed under an older jaxrec): found here, not as a crash in the middle of train."""
    expected = self.manifest.get("files") or {name: None for name in CORE_FILES}
    wrong = []
    for name, size in expected.items():
      path = os.path.join(self.path, *name.split("/"))
      if not os.path.isfile(path):
        wrong.append(f"{name} is missing")
      elif size is not None and os.path.getsize(path) != size:
        wrong.append(f"{name} has {os.path.getsize(path)} bytes, not {size}")
    if wrong:
      shown = "; ".join(wrong[:5]) + (f"; and {len(wrong) - 5} more" if len(wrong) > 5 else "")
      raise UserError(f"{self.path} is damaged: {shown} (its {MANIFEST} lists every file). "
                      "Prepare it again with `jaxrec data prepare ... --overwrite` (or copy it "
                      "again whole).")

  @property
  def stats(self) -> dict:
    return self.manifest["stats"]

  @property
  def shard_paths(self) -> list[str]:
    """The token shards, in shard order (one file for a directory of the older layout)."""
    return [os.path.join(self.path, s["file"]) for s in self.manifest.get("shards")
            or [{"file": TOKENS}]]

  @functools.cached_property
  def layout(self) -> shards_lib.Layout:
    """Where each user's record lives: (shard, index within the shard) by record."""
    return shards_lib.Layout.of(self)

  def host_part(self, index: int, count: int) -> shards_lib.HostPart:
    """The users that process `index` of `count` reads: those of shards i with i % count ==
    index. The files it opens are only those shards."""
    return self.layout.host_part(index, count)

  @property
  def num_users(self) -> int:
    """Token records over all shards: one per known user."""
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
    reader = shards_lib.TokenReader(self.layout)
    try:
      return reader.read(np.asarray(user_ids, np.int64) - FIRST_ID)
    finally:
      reader.close()
