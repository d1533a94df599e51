"""Sharded token files (issue 23): the layout, what each process of a multi-host job reads, and
directories of the older single-file layout."""

import json
import os
import shutil

import grain
import jax
import numpy as np
import pytest
from array_record.python import array_record_module

from jaxrec.data import pipelines as P
from jaxrec.data import shards
from jaxrec.data.prepare import PrepareOptions, prepare
from jaxrec.data.storage import PreparedDataset
from jaxrec.errors import UserError

USERS = np.arange(2, 945)  # MovieLens-100K's user ids


@pytest.fixture(scope="module")
def sharded(ml100k_raw, tmp_path_factory):
  return prepare(ml100k_raw, str(tmp_path_factory.mktemp("sharded") / "ml"),
                 PrepareOptions(shards=6))


def _splitmix64(x):
  """The reference (Vigna), in Python integers."""
  mask = 2**64 - 1
  z = (x + 0x9E3779B97F4A7C15) & mask
  z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & mask
  z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & mask
  return z ^ (z >> 31)


def test_shard_of_is_a_fixed_hash_of_the_user_id():
  # Fixed values: the same on every machine and Python process (Python's str hash is salted).
  assert shards.shard_of(np.arange(2, 12), 8).tolist() == [6, 5, 2, 2, 0, 7, 6, 4, 2, 5]
  assert shards.shard_of([2**40 + 7], 1000)[0] == _splitmix64(2**40 + 7) % 1000
  assert shards.shard_of(np.arange(2, 10_002), 6).tolist().count(0) in range(1500, 1834)
  assert [shards.default_num_shards(n) for n in (1, 100_000, 1_000_000, 50_000_000, 10**10)] == \
      [1, 1, 4, 256, 1024]


def test_the_sharded_layout_round_trips(sharded, ml100k):
  listed = sharded.manifest["shards"]
  assert [s["file"] for s in listed] == [f"tokens-{k:05d}-of-00006.array_record" for k in range(6)]
  assert sum(s["users"] for s in listed) == 943
  assert sum(s["tokens"] for s in listed) == 100_000
  assert all(s["file"] in sharded.manifest["files"] for s in listed)  # size-checked when opened
  # Each shard holds the users its hash names, in increasing id order.
  shard = shards.shard_of(USERS, 6)
  for k, entry in enumerate(listed):
    reader = array_record_module.ArrayRecordReader(os.path.join(sharded.path, entry["file"]))
    stored = [shards.decode(r) for r in reader.read_all()]
    reader.close()
    expected = ml100k.user_tokens(USERS[shard == k])
    assert len(stored) == entry["users"] == len(expected)
    assert all(np.array_equal(a, b) for a, b in zip(stored, expected))
  # Random access in any order, repeats included (what serving does per request).
  users = np.array([944, 2, 500, 2, 37])
  assert all(np.array_equal(a, b) for a, b in
             zip(sharded.user_tokens(users), ml100k.user_tokens(users)))
  with pytest.raises(UserError, match="user ids must be in 2..944"):
    sharded.user_tokens([945])


def test_one_process_reads_the_same_batches_whatever_the_shard_count(sharded, ml100k):
  for build in (lambda ds: P.sequence_dataset(ds, max_len=20, options=_opts()),
                lambda ds: P.pair_dataset(ds, options=_opts()),
                lambda ds: P.ranking_dataset(ds, negatives_per_positive=3, options=_opts())):
    for a, b in zip(_take(build(sharded), 12), _take(build(ml100k), 12)):
      assert jax.tree.all(jax.tree.map(np.array_equal, a, b))


def _opts(**kw):
  return P.PipelineOptions(**{"batch_size": 64, "seed": 3, "num_epochs": None, **kw})


def _take(data, n):
  it = iter(data)
  return [next(it) for _ in range(n)]


class _Opened:
  """Records the files every Grain source opens."""

  def __init__(self, monkeypatch):
    self.paths = []
    real = grain.sources.ArrayRecordDataSource

    def recording(paths):
      self.paths.extend(os.path.basename(p) for p in paths)
      return real(paths)
    monkeypatch.setattr(P.grain.sources, "ArrayRecordDataSource", recording)


def _as_process(monkeypatch, index, count):
  monkeypatch.setattr(jax, "process_index", lambda: index)
  monkeypatch.setattr(jax, "process_count", lambda: count)


EVAL = {
    "sequence": lambda ds: P.sequence_dataset(ds, "test", max_len=5,
                                              options=P.PipelineOptions(batch_size=50)),
    "pairs": lambda ds: P.pair_dataset(ds, "valid", options=P.PipelineOptions(batch_size=50)),
    "ranking": lambda ds: P.ranking_dataset(ds, "test", negatives_per_positive=1,
                                            options=P.PipelineOptions(batch_size=100)),
}


@pytest.mark.parametrize("kind", EVAL)
@pytest.mark.parametrize("count", [2, 3])
def test_each_process_opens_only_its_shards_and_together_they_see_every_user_once(
    sharded, monkeypatch, kind, count):
  users, batches = [], []
  for index in range(count):
    _as_process(monkeypatch, index, count)
    opened = _Opened(monkeypatch)
    data = list(EVAL[kind](sharded))
    assert sorted(set(opened.paths)) == [f"tokens-{k:05d}-of-00006.array_record"
                                         for k in range(index, 6, count)]
    weight = np.concatenate([b["weight"] for b in data]) > 0
    user = np.concatenate([(b["sparse"] if kind == "ranking" else b)["user"] for b in data])
    if kind == "ranking":
      weight = weight[::2]  # one positive, one negative per token
      user = user[::2]
    users.append(user[weight])
    batches.append(len(data))
  assert len(set(batches)) == 1  # every process makes as many evaluation batches
  every = np.concatenate(users)
  # One row per user (sequences, a test token per user) or per held-out token (pairs, ranking).
  assert sorted(every.tolist()) == USERS.tolist()
  assert not set(users[0].tolist()) & set(users[1].tolist())


@pytest.mark.parametrize("kind", ["pairs", "ranking"])
def test_token_index_arrays_are_the_size_of_the_processs_data(sharded, monkeypatch, kind):
  sizes = []
  real = P._index_dataset

  def capture(indices, largest, options, train):
    sizes.append(len(indices))
    return real(indices, largest, options, train)
  monkeypatch.setattr(P, "_index_dataset", capture)
  build = {"pairs": P.pair_dataset, "ranking": P.ranking_dataset}[kind]
  for index in range(3):
    _as_process(monkeypatch, index, 3)
    build(sharded, options=_opts())
  train_tokens = sharded.splits.train_end
  mine = [int(train_tokens[sharded.host_part(index, 3).records].sum()) for index in range(3)]
  assert sizes == mine
  assert sum(sizes) == sharded.splits.counts()["train"]
  assert max(sizes) < 0.5 * sum(sizes)


def test_fewer_shards_than_processes_is_refused(ml100k):
  assert len(ml100k.manifest["shards"]) == 1  # ~250k events a shard: MovieLens-100K has one
  with pytest.raises(UserError, match=r"1 token shard\(s\) but this job has 2 processes.*--shards"):
    P.sequence_dataset(ml100k, options=P.PipelineOptions(shard_index=1, shard_count=2))


def test_the_older_single_file_layout_is_read_as_one_shard(ml100k, tmp_path):
  old = tmp_path / "old"
  shutil.copytree(ml100k.path, old)
  os.rename(old / "tokens-00000-of-00001.array_record", old / "tokens.array_record")
  manifest = json.loads((old / "manifest.json").read_text())
  del manifest["shards"]
  files = manifest["files"]
  files["tokens.array_record"] = files.pop("tokens-00000-of-00001.array_record")
  (old / "manifest.json").write_text(json.dumps(manifest))
  ds = PreparedDataset(str(old))
  assert ds.shard_paths == [str(old / "tokens.array_record")]
  assert all(np.array_equal(a, b) for a, b in
             zip(ds.user_tokens(USERS), ml100k.user_tokens(USERS)))
  a, b = _take(P.pair_dataset(ds, options=_opts()), 2), _take(P.pair_dataset(ml100k, options=_opts()), 2)
  assert all(jax.tree.all(jax.tree.map(np.array_equal, x, y)) for x, y in zip(a, b))
  with pytest.raises(UserError, match="Prepare it again with `jaxrec data prepare ... --shards N"
                                      " --overwrite`"):
    P.pair_dataset(ds, options=P.PipelineOptions(shard_index=0, shard_count=2))


def test_a_process_whose_shards_hold_no_users_is_refused(tmp_path):
  from jaxrec.data.sources import load_raw
  from jaxrec.data.tabular import parse_column_mapping
  (tmp_path / "log.csv").write_text("uid,movie,ts\n" + "".join(
      f"u{u},m{k},{1000 * k + u}\n" for u in range(4) for k in range(3)))
  raw = load_raw("csv", path=str(tmp_path / "log.csv"),
                 columns=parse_column_mapping("user=uid,item=movie,timestamp=ts"))
  ds = prepare(raw, str(tmp_path / "out"), PrepareOptions(shards=8))
  empty = [k for k, s in enumerate(ds.manifest["shards"]) if s["users"] == 0]
  with pytest.raises(UserError, match="hold no users.*fewer `--shards`"):
    ds.host_part(empty[0], 8)
