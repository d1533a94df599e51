"""benchmarks/peer: jaxrec's split as RecBole atomic files (no torch, no RecBole needed)."""

import json
import os
import sys

import numpy as np
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks", "peer"))
from recbole_files import Sequences, dataset_config, read_atomic, write_atomic  # noqa: E402


def _sequences() -> Sequences:
  # User 7: 6 tokens (train 4, valid 1, test 1); user 8: 3 tokens; user 9: 2 tokens, train only.
  items = [np.array([11, 12, 13, 14, 15, 16]), np.array([21, 22, 23]), np.array([31, 32])]
  return Sequences(users=[7, 8, 9], items=items,
                   times=[np.arange(len(i)) * 100 + 1_000_000 for i in items],
                   train_end=np.array([4, 1, 2]), valid_end=np.array([5, 2, 2]))


def _files(folder, name):
  return {s: read_atomic(os.path.join(folder, f"{name}.{s}.inter"))
          for s in ("train", "valid", "test")}


def test_sequential_files_hold_every_prefix_and_jaxrecs_targets(tmp_path):
  folder = write_atomic(str(tmp_path), "seq", _sequences(), "sequential", max_len=2)
  rows = _files(folder, "seq")
  train = [(r["user_id"], r["item_id_list"], r["item_id"]) for r in rows["train"]]
  # Every prefix with at least one earlier training item, the list cut to the last max_len.
  assert train == [("7", "11", "12"), ("7", "11 12", "13"), ("7", "12 13", "14"),
                   ("9", "31", "32")]
  assert [(r["user_id"], r["item_id_list"], r["item_id"]) for r in rows["valid"]] == [
      ("7", "13 14", "15"), ("8", "21", "22")]
  assert [(r["user_id"], r["item_id_list"], r["item_id"]) for r in rows["test"]] == [
      ("7", "14 15", "16"), ("8", "21 22", "23")]
  assert rows["test"][0]["timestamp"] == "1000500"  # as written, never normalised here
  with open(os.path.join(folder, "expected.json")) as f:
    expected = json.load(f)
  # 'History excluded' masks every earlier item, not only the max_len the model reads.
  assert expected["test"] == {"user": [7, 8], "item": [16, 23],
                              "history": [[11, 12, 13, 14, 15], [21, 22]]}
  assert expected["valid"]["history"] == [[11, 12, 13, 14], [21]]
  assert expected["num_train_rows"]["sequential"] == len(train)
  assert expected["catalogue"] == [11, 12, 13, 14, 15, 16, 21, 22, 23, 31, 32]


def test_a_history_list_shares_the_item_numbering(tmp_path):
  """RecBole numbers each token field apart by first appearance unless it is aliased; our lists
  start one item before the targets, so unaliased every history item would read as another."""
  folder = write_atomic(str(tmp_path), "seq", _sequences(), "sequential", max_len=2)
  with open(os.path.join(folder, "seq.train.inter")) as f:
    header = f.readline().rstrip("\n").split("\t")
  lists = [field.split(":")[0] for field in header if field.endswith(":token_seq")]
  assert dataset_config("sequential") == {"alias_of_item_id": lists}
  train = _files(folder, "seq")["train"]
  first_seen = lambda tokens: list(dict.fromkeys(tokens))  # noqa: E731
  assert first_seen(r["item_id"] for r in train) != first_seen(
      t for r in train for t in r["item_id_list"].split())
  assert dataset_config("general") == {}  # no list field to alias


def test_general_files_hold_pairs(tmp_path):
  folder = write_atomic(str(tmp_path), "gen", _sequences(), "general")
  rows = _files(folder, "gen")
  assert [(r["user_id"], r["item_id"]) for r in rows["train"]] == [
      ("7", "11"), ("7", "12"), ("7", "13"), ("7", "14"), ("8", "21"), ("9", "31"), ("9", "32")]
  assert [(r["user_id"], r["item_id"]) for r in rows["valid"]] == [("7", "15"), ("8", "22")]
  assert [(r["user_id"], r["item_id"]) for r in rows["test"]] == [("7", "16"), ("8", "23")]
  with open(os.path.join(folder, "gen.train.inter")) as f:
    assert f.readline() == "user_id:token\titem_id:token\ttimestamp:float\n"
  with open(os.path.join(folder, "expected.json")) as f:
    assert json.load(f)["num_train_rows"]["general"] == 7


def test_unknown_kind_is_refused(tmp_path):
  with pytest.raises(ValueError, match="sequential"):
    write_atomic(str(tmp_path), "x", _sequences(), "graph")


def test_a_finished_run_copied_back_is_taken_only_for_its_own_recipe(tmp_path):
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  from peer_quality import finished_run, write_spec
  out = str(tmp_path / "runs" / "k")
  write_spec(out, "SASRec", 1, 300, {"train_neg_sample_args": None}, str(tmp_path / "ds"))
  with open(os.path.join(out, "spec.json")) as f:
    spec = json.load(f)
  assert spec["dataset_dir"] == os.path.join("..", "..", "ds")  # relative: data/peer/ travels
  assert finished_run(out, "SASRec", 1, spec["config"], 300) is None  # not trained yet

  def result(**kw):
    with open(os.path.join(out, "result.json"), "w") as f:
      json.dump({"spec": spec, "complete": True, "epochs_trained": 40, **kw}, f)
  result()
  assert finished_run(out, "SASRec", 1, spec["config"], 300)["epochs_trained"] == 40
  assert finished_run(out, "SASRec", 2, spec["config"], 300) is None
  assert finished_run(out, "SASRec", 1, {"train_batch_size": 256}, 300) is None
  result(complete=False)  # stopped by a cap: finished only for that cap
  assert finished_run(out, "SASRec", 1, spec["config"], 300) is None
  assert finished_run(out, "SASRec", 1, spec["config"], 40) is not None


def test_an_unfinished_run_is_kept_and_resumed_on_another_machine(tmp_path, monkeypatch):
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  import peer_quality as pq
  monkeypatch.setattr(pq, "PEER_DATA", str(tmp_path / "peer"))
  monkeypatch.setattr(pq, "RUNS", str(tmp_path / "cache"))
  monkeypatch.setattr(pq, "UNFINISHED", str(tmp_path / "cache" / "unfinished"))
  key = pq.recbole_key("sasrec", 0, "split")
  out = os.path.join(pq.PEER_DATA, "runs", key)
  assert pq.keep_unfinished("sasrec", 0, "split") is None  # never trained: nothing to keep
  os.makedirs(out)
  for name in pq.STATE:
    with open(os.path.join(out, name), "w") as f:
      f.write(name)
  kept = pq.keep_unfinished("sasrec", 0, "split")
  assert kept == os.path.join(pq.UNFINISHED, f"{key}.tgz")

  # Another machine: an empty run directory gets the checkpoints back, a trained one keeps its own.
  other = str(tmp_path / "other")
  pq.restore_unfinished(other, key)
  assert {n: open(os.path.join(other, n)).read() for n in os.listdir(other)} == {
      n: n for n in pq.STATE}
  with open(os.path.join(other, "progress.json"), "w") as f:
    f.write("newer")
  pq.restore_unfinished(other, key)
  assert open(os.path.join(other, "progress.json")).read() == "newer"

  # Once the run's complete result is cached there is nothing left to keep.
  name = f"recbole-sasrec-s0-{key}.json"
  with open(os.path.join(pq.RUNS, name), "w") as f:
    json.dump({"complete": True}, f)
  assert pq.keep_unfinished("sasrec", 0, "split") is None


def test_seen_in_top10_scores_without_the_newest_item_as_rated_but_not_read():
  from seen_in_top10 import user_row, without_newest
  inputs = np.array([[0, 0, 5, 6, 7], [1, 2, 3, 4, 9]])
  dropped = without_newest(inputs)
  np.testing.assert_array_equal(dropped, [[0, 0, 0, 5, 6], [0, 1, 2, 3, 4]])
  scores = -np.arange(20, dtype=float)  # item i ranks i-th: 5, 6, 7 all in the top 10
  row = user_row(scores, target=12, seen=np.array([5, 6, 7]), read=dropped[0][dropped[0] > 0])
  assert row["rank"] == 12 and row["rank_history_excluded"] == 9
  assert sorted(row["slots"]) == [-2] * 7 + [-1, 0, 1]  # 7 rated, dropped: rated, not read


def test_a_jaxrec_runs_key_leaves_out_options_added_after_it_while_they_are_off():
  sys.path.insert(0, os.path.join(ROOT, "benchmarks"))
  from peer_quality import jaxrec_config, jaxrec_key
  config, _ = jaxrec_config("sasrec", 0, "data/movielens-100k", "history_excluded")
  config.data.shuffle_ties = False  # off, whatever the recipe says now
  before = config.copy_and_resolve_references()
  with before.unlocked():
    del before.data["shuffle_ties"]  # the config as it was when most runs were cached
  assert jaxrec_key(config, "split") == jaxrec_key(before, "split")
  config.data.shuffle_ties = True
  assert jaxrec_key(config, "split") != jaxrec_key(before, "split")
