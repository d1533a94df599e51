import socket

import numpy as np
import pytest

from jaxrec.data import tfds_movielens
from jaxrec.data.events import EventType
from jaxrec.data.tfds_movielens import load_tfds_movielens, split_title
from jaxrec.errors import UserError

tfds = pytest.importorskip("tensorflow_datasets")

NAMES = ("movielens-1m", "movielens-20m", "movielens-25m")


@pytest.fixture
def small_batches(monkeypatch):
  """Several batches even for a few mock examples, so first-row-wins spans batches."""
  monkeypatch.setattr(tfds_movielens, "BATCH", 7)


@pytest.mark.parametrize("name", NAMES)
def test_mock_data_converts(name, tmp_path, small_batches):
  with tfds.testing.mock_data(num_examples=40):
    raw = load_tfds_movielens(name, str(tmp_path), download=False)
  events = raw.events
  assert raw.name == name
  assert len(events) == 40
  for column in (events.user, events.item, events.timestamp, events.event_type, events.value):
    assert len(column) == 40
  assert events.user.dtype == np.int64 or events.user.dtype.kind == "U"
  assert events.item.dtype == np.int64 or events.item.dtype.kind == "U"
  assert events.timestamp.dtype == np.int64
  assert events.event_type.dtype == np.int8 and np.all(events.event_type == EventType.RATING)
  assert events.value.dtype == np.float32

  items = raw.items
  assert items.ids.dtype == events.item.dtype
  assert set(items.ids.tolist()) == set(events.item.tolist())
  assert set(items.columns) == {"title", "year", "genres"} and items.multi_valued == ("genres",)
  genre_names = set(tfds.builder(f"movielens/{name[10:]}-ratings").info.features[
      "movie_genres"].feature.names)
  for column in items.columns.values():
    assert column.dtype.kind == "U" and len(column) == len(items.ids)
  assert all(set(g.split("|")) <= genre_names for g in items.columns["genres"] if g)
  assert all(y == "" or (len(y) == 4 and y.isdigit()) for y in items.columns["year"])

  users = raw.users
  assert users.ids.dtype == events.user.dtype
  assert set(users.ids.tolist()) == set(events.user.tolist())
  if name == "movielens-1m":
    assert set(users.columns) == {"age", "gender", "occupation", "zip"}
    assert set(users.columns["gender"]) <= {"M", "F"}
    for column in users.columns.values():
      assert column.dtype.kind == "U" and len(column) == len(users.ids)
  else:
    assert users.columns == {}


def test_download_path_under_mock(tmp_path, monkeypatch):
  """download=True checks the host first; with it reachable, TFDS (mocked) does the rest."""
  probed = []
  monkeypatch.setattr(socket, "create_connection",
                      lambda address, timeout: probed.append(address) or socket.socket())
  with tfds.testing.mock_data(num_examples=5):
    raw = load_tfds_movielens("movielens-1m", str(tmp_path))
  assert len(raw.events) == 5 and probed == [("files.grouplens.org", 443)]


def test_unreachable_host_fails_fast(tmp_path, monkeypatch):
  def refuse(address, timeout):
    raise OSError("Name or service not known")
  monkeypatch.setattr(socket, "create_connection", refuse)
  monkeypatch.setattr(tfds, "load", lambda *a, **k: pytest.fail("must not try to download"))
  with pytest.raises(UserError) as error:
    load_tfds_movielens("movielens-20m", str(tmp_path))
  message = str(error.value)
  assert "TFDS download failed" in message and "files.grouplens.org" in message
  assert str(tmp_path / "tfds") in message and "movielens-100k" in message


def test_download_error_becomes_user_error(tmp_path, monkeypatch):
  def fail(*args, **kwargs):
    raise ConnectionError("Max retries exceeded with url: /datasets/movielens/ml-25m.zip")
  monkeypatch.setattr(tfds_movielens, "_check_reachable", lambda *args: None)
  monkeypatch.setattr(tfds, "load", fail)
  with pytest.raises(UserError) as error:
    load_tfds_movielens("movielens-25m", str(tmp_path))
  message = str(error.value)
  assert "TFDS download failed" in message and "Max retries exceeded" in message
  assert f"copy DIR/movielens into {tmp_path / 'tfds'}" in message
  assert "tfds build movielens/25m-ratings" in message and "movielens-100k" in message
  assert isinstance(error.value.__cause__, ConnectionError)


def test_not_downloaded_and_download_off(tmp_path):
  with pytest.raises(UserError, match="not in the TFDS data directory and download=False"):
    load_tfds_movielens("movielens-1m", str(tmp_path), download=False)


def test_unknown_name():
  with pytest.raises(UserError, match="movielens-1m, movielens-20m, movielens-25m"):
    load_tfds_movielens("movielens-10m")


@pytest.mark.parametrize("title, expected", [
    ("Toy Story (1995)", ("Toy Story", "1995")),
    ("City of Lost Children, The (Cité des enfants perdus, La) (1995)",
     ("City of Lost Children, The (Cité des enfants perdus, La)", "1995")),
    ("Fawlty Towers (1975-1979)", ("Fawlty Towers", "1975")),
    ("Babylon 5", ("Babylon 5", "")),
    ("Ready Player One (2018) ", ("Ready Player One", "2018")),
])
def test_split_title(title, expected):
  assert split_title(title) == expected


def test_numeric_ids_become_int64():
  assert tfds_movielens._raw_ids(np.array([b"1", b"6040"])).dtype == np.int64
  assert tfds_movielens._raw_ids(np.array([b"1", b"x"])).tolist() == ["1", "x"]
