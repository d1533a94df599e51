"""`--init-from`: vocabulary growth by raw id, training on new data only, frozen backbones, and
the errors of a workdir that does not match."""

import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from jaxrec import cli
from jaxrec.config import apply_overrides, load_config
from jaxrec.data import pipelines
from jaxrec.data.prepare import prepare
from jaxrec.data.snapshot import snapshot, time_at_quantile
from jaxrec.data.vocab import FIRST_ID
from jaxrec.errors import UserError
from jaxrec.train import warm_start
from jaxrec.train.trainer import Run, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def snapshots(ml100k_raw, tmp_path_factory):
  """MovieLens-100K as of its 90% event time, and all of it: new items, users and events."""
  root = tmp_path_factory.mktemp("snapshots")
  cut = time_at_quantile(ml100k_raw, 0.9)
  old = prepare(snapshot(ml100k_raw, cut), str(root / "old"))
  new = prepare(ml100k_raw, str(root / "new"))
  return old, new


def config_for(data_dir, name="sasrec", *overrides):
  config = load_config(os.path.join(ROOT, "configs", f"movielens_{name}.py:smoke"))
  return apply_overrides(config, [f"data.dir={data_dir}", "train.num_steps=3",
                                  "train.eval_every=3", *overrides])


@pytest.fixture(scope="module")
def earlier(snapshots, tmp_path_factory):
  """A SASRec run on the earlier snapshot."""
  workdir = str(tmp_path_factory.mktemp("earlier"))
  train(config_for(snapshots[0].path), workdir)
  return workdir


def _params(run) -> dict[str, np.ndarray]:
  leaves = jax.tree_util.tree_flatten_with_path(run.state)[0]
  return {warm_start.path_name(p): np.asarray(x) for p, x in leaves}


def _checkpoint(workdir) -> dict[str, np.ndarray]:
  """A workdir's best parameters, read without building its model."""
  return warm_start._restore_model(workdir, jax.sharding.SingleDeviceSharding(jax.devices()[0]))[0]


def test_snapshot_grows_items_and_users(snapshots):
  old, new = snapshots
  old_items, new_items = old.vocabs["item"].raw_ids, new.vocabs["item"].raw_ids
  assert set(old_items) < set(new_items)
  assert set(old.vocabs["user"].raw_ids) < set(new.vocabs["user"].raw_ids)
  # Ids follow frequency, so the same raw item has moved in the later snapshot.
  assert not np.array_equal(new_items[:len(old_items)], old_items)


@pytest.mark.slow
def test_vocabulary_growth_keeps_old_rows_bit_identical(snapshots, earlier):
  old_ds, new_ds = snapshots
  trained = _checkpoint(earlier)
  run = Run(config_for(new_ds.path, "sasrec", f"train.init_from={earlier}"))
  fresh = _params(run)
  summary = warm_start.warm_start(run, earlier)
  grown = _params(run)

  name = "encoder/item_embedding/embedding"
  assert summary["tables_grown"] == {name: "item"}
  assert trained[name].shape != grown[name].shape
  old_vocab, new_vocab = old_ds.vocabs["item"], new_ds.vocabs["item"]
  new_ids = new_vocab.lookup(old_vocab.raw_ids)
  old_ids = np.arange(len(old_vocab.raw_ids)) + FIRST_ID
  # Every item the earlier run knew: its row, bit for bit, at its new id.
  assert np.array_equal(grown[name][new_ids].view(np.uint32), trained[name][old_ids].view(np.uint32))
  assert np.array_equal(grown[name][:FIRST_ID], trained[name][:FIRST_ID])
  # New items keep the fresh initialisation of this run.
  added = np.setdiff1d(np.arange(FIRST_ID, len(new_vocab)), new_ids)
  assert len(added) == summary["new_items"] > 0
  assert np.array_equal(grown[name][added], fresh[name][added])
  for other in grown:
    if other != name:
      assert np.array_equal(grown[other], trained[other]), other


def test_new_data_only_masks_the_earlier_targets(snapshots):
  old_ds, new_ds = snapshots
  cut = warm_start.last_event_time(old_ds)
  assert cut == max(int(t["timestamp"].max()) for t in old_ds.user_tokens(
      np.arange(old_ds.num_users) + FIRST_ID))
  longest = int(new_ds.splits.train_end.max())
  options = pipelines.PipelineOptions(batch_size=64, num_epochs=1)
  seen = {}
  for batch in pipelines.sequence_dataset(new_ds, "train", max_len=longest, targets_after=cut,
                                          options=options):
    for user, targets in zip(batch["user"], batch["targets"]):
      seen[int(user)] = targets[targets > 0]
  histories = new_ds.user_tokens(np.arange(new_ds.num_users) + FIRST_ID)
  expected = {}
  for record, tokens in enumerate(histories):
    train_tokens = tokens[1:new_ds.splits.train_end[record]]
    new_items = train_tokens["item"][train_tokens["timestamp"] > cut]
    if len(new_items):
      expected[record + FIRST_ID] = new_items
  # The whole history fits the window: the targets are exactly each user's new tokens, and only
  # users with new tokens train (64 users per batch, the last partial batch dropped).
  assert set(seen) <= set(expected) and len(seen) == len(expected) // 64 * 64
  for user, targets in seen.items():
    assert np.array_equal(targets, expected[user])


def test_short_windows_always_hold_a_new_target(snapshots):
  old_ds, new_ds = snapshots
  cut = warm_start.last_event_time(old_ds)
  options = pipelines.PipelineOptions(batch_size=64, num_epochs=2, seed=3)
  for batch in pipelines.sequence_dataset(new_ds, "train", max_len=8, targets_after=cut,
                                          options=options):
    assert (batch["targets"] > 0).any(axis=1).all()


@pytest.mark.slow
def test_init_from_run_with_frozen_blocks(snapshots, earlier, tmp_path):
  """Through train(): the data cut-off is recorded, and the frozen parameters stay bit-identical
  while the others train."""
  old_ds, new_ds = snapshots
  config = config_for(new_ds.path, "sasrec", f"train.init_from={earlier}",
                      "train.freeze=encoder/blocks/.*", "train.eval_every=100")
  workdir = str(tmp_path / "frozen")
  results = train(config, workdir)
  assert np.isfinite(results["test"]["ndcg@10"])
  with open(os.path.join(workdir, "config.json")) as f:
    assert json.load(f)["data"]["train_targets_after"] == warm_start.last_event_time(old_ds)
  with open(os.path.join(workdir, "warm_start.json")) as f:
    assert json.load(f)["new_items"] > 0
  start, after = _checkpoint(earlier), _checkpoint(workdir)
  for name in start:
    if start[name].shape == after[name].shape:
      same = np.array_equal(start[name], after[name])
      assert same == name.startswith("encoder/blocks/"), name


@pytest.mark.slow
def test_zero_steps_on_the_same_data_is_the_earlier_model(snapshots, earlier, tmp_path):
  """A warm start with no training on the earlier run's own dataset evaluates exactly as that run
  did (every row maps to itself; the benchmark's "as is" row relies on zero-step runs)."""
  old_ds, _ = snapshots
  config = config_for(old_ds.path, "sasrec", f"train.init_from={earlier}", "train.num_steps=0",
                      "train.new_data_only=false")  # the same data has no new targets
  results = train(config, str(tmp_path / "as-is"))
  with open(os.path.join(earlier, "results.json")) as f:
    before = json.load(f)
  assert results["last_step"] == 0
  for split in ("valid", "test"):
    for metric in ("ndcg@10", "recall@20"):
      assert results[split][metric] == pytest.approx(before[split][metric], abs=1e-6), split


@pytest.fixture(scope="module")
def earlier_foundation(snapshots, tmp_path_factory):
  """A foundation-model run on the earlier snapshot."""
  workdir = str(tmp_path_factory.mktemp("earlier_foundation"))
  train(config_for(snapshots[0].path, "foundation"), workdir)
  return workdir


@pytest.mark.slow
def test_backbone_freeze_trains_only_a_new_head(snapshots, earlier_foundation, tmp_path):
  """The foundation model warm-started with a new multi-token head: with the backbone frozen,
  only the head moves."""
  config = config_for(snapshots[1].path, "foundation", f"train.init_from={earlier_foundation}",
                      "train.freeze=backbone", "loss.horizon=2")
  tuned = str(tmp_path / "tuned")
  run = Run(config)
  fresh = _params(run)
  warm_start.warm_start(run, earlier_foundation)
  start = _params(run)
  del run
  train(config, tuned)
  with open(os.path.join(tuned, "warm_start.json")) as f:
    head = json.load(f)["new_parameters"]
  assert head and all(name.startswith("horizon_heads/") for name in head)
  after = _checkpoint(tuned)
  for name in start:
    assert np.array_equal(start[name], after[name]) == (name not in head), name
  assert all(np.array_equal(start[name], fresh[name]) for name in head)


@pytest.mark.slow
def test_new_items_start_from_their_metadata(snapshots, earlier_foundation):
  old_ds, new_ds = snapshots
  run = Run(config_for(new_ds.path, "foundation", f"train.init_from={earlier_foundation}"))
  summary = warm_start.warm_start(run, earlier_foundation)
  assert summary["new_items_init"] == "model.init_new_items"
  table = _params(run)["items/id_embedding/embedding"]
  added = np.setdiff1d(np.arange(FIRST_ID, new_ds.num_items),
                       new_ds.vocabs["item"].lookup(old_ds.vocabs["item"].raw_ids))
  assert len(added) and not table[added].any() and table[FIRST_ID:].any()


def _item_vectors(data_path, earlier_foundation):
  """Every item's vector (id + metadata) of the earlier foundation run, warm-started onto a
  dataset, and that dataset."""
  run = Run(config_for(data_path, "foundation", f"train.init_from={earlier_foundation}",
                       "train.new_data_only=false"))
  warm_start.warm_start(run, earlier_foundation)
  model = nnx.merge(run.graphdef, run.state)
  return np.asarray(model.item_vectors(run.task._metadata())), run.task.data


@pytest.mark.slow
def test_known_items_keep_their_vectors_across_snapshots(snapshots, earlier_foundation):
  """A later snapshot renumbers items, genres, years and title words (hashed into buckets): every
  item the earlier run knew still gets the same vector, id and metadata parts together."""
  before, old_ds = _item_vectors(snapshots[0].path, earlier_foundation)
  after, new_ds = _item_vectors(snapshots[1].path, earlier_foundation)
  old_ids = np.arange(len(old_ds.vocabs["item"].raw_ids)) + FIRST_ID
  new_ids = new_ds.vocabs["item"].lookup(old_ds.vocabs["item"].raw_ids)
  np.testing.assert_allclose(after[new_ids], before[old_ids], atol=1e-6)


def test_title_word_buckets_move_with_their_words():
  from jaxrec.data.vocab import Vocabulary
  from jaxrec.models.layers import title_bucket
  then = Vocabulary(np.array(["the", "of", "man"]), np.array([5, 3, 1]))
  now = Vocabulary(np.array(["man", "the", "new", "of"]), np.array([9, 6, 4, 3]))
  buckets = 8
  old = np.arange(buckets, dtype=np.float32)[:, None] * 10
  fresh = np.full((buckets, 1), -1, np.float32)
  moved = warm_start._move_title_buckets(old, fresh, warm_start.RowMap(then, now))
  bucket = lambda vocab, word: int(title_bucket(vocab.lookup(np.array([word])), buckets)[0])
  for word in ("the", "of", "man"):
    assert bucket(then, word) != bucket(now, word)  # renumbered: the word changed bucket
    assert moved[bucket(now, word), 0] == old[bucket(then, word), 0]
  assert moved[bucket(now, "new"), 0] == -1  # a word the earlier run never saw: fresh


@pytest.mark.slow
def test_a_workdir_of_another_model_is_refused(snapshots, earlier):
  _, new_ds = snapshots
  with pytest.raises(UserError, match="model.name is 'sasrec'.*'gru4rec'"):
    warm_start.resolve(config_for(new_ds.path, "gru4rec", f"train.init_from={earlier}"))


@pytest.mark.slow
def test_a_workdir_of_other_dimensions_is_refused(snapshots, earlier):
  _, new_ds = snapshots
  config = config_for(new_ds.path, "sasrec", f"train.init_from={earlier}", "model.dim=32")
  warm_start.resolve(config)
  with pytest.raises(UserError, match=r"model.dim 16 there, 32 here"):
    warm_start.warm_start(Run(config), earlier)


def test_cli_init_from_a_directory_that_is_not_a_workdir(tmp_path, capsys):
  code = cli.main(["train", "--config", os.path.join(ROOT, "configs", "movielens_sasrec.py:smoke"),
                   "--workdir", str(tmp_path / "w"), "--init-from", str(tmp_path)])
  assert code == 2
  assert "no config.json" in capsys.readouterr().err


@pytest.mark.slow
def test_new_data_only_without_new_events_is_refused(snapshots, earlier):
  old_ds, _ = snapshots
  with pytest.raises(UserError, match="no event after.*new_data_only=false"):
    warm_start.resolve(config_for(old_ds.path, "sasrec", f"train.init_from={earlier}"))


def test_backbone_freeze_needs_init_from(snapshots):
  with pytest.raises(UserError, match="--init-from"):
    warm_start.resolve(config_for(snapshots[1].path, "sasrec", "train.freeze=backbone"))


def test_fixed_size_tables_are_not_permuted_by_a_vocabulary_that_fits():
  from jaxrec.data.vocab import Vocabulary
  genres_then = Vocabulary(np.array(["drama", "comedy", "action"]), np.array([5, 3, 1]))
  genres_now = Vocabulary(np.array(["comedy", "drama", "action"]), np.array([9, 6, 2]))
  items_then = Vocabulary(np.array([10, 11]), np.array([2, 1]))
  items_now = Vocabulary(np.array([11, 10, 12]), np.array([4, 3, 1]))
  maps = {"item": warm_start.RowMap(items_then, items_now),
          "item_genres": warm_start.RowMap(genres_then, genres_now)}
  pick = warm_start.table_vocabulary
  assert pick("items/metadata_tables/genres/embedding", 5, 5, maps) == "item_genres"
  assert pick("tokens/tables/weekday/embedding", 5, 5, maps) is None  # 5 rows, like genres
  assert pick("items/id_embedding/embedding", 4, 5, maps) == "item"
  assert pick("encoder/item_embedding/embedding", 5, 6, maps) == "item"  # + BERT4Rec's mask row
  old = np.arange(5, dtype=np.float32)[:, None]
  moved = maps["item_genres"].apply(old, np.full((5, 1), -1, np.float32))[:, 0]
  assert moved.tolist() == [0, 1, 3, 2, 4]  # comedy and drama swapped places
  with pytest.raises(UserError, match="fits the vocabularies"):
    pick("some/table", 4, 5, {**maps, "user": warm_start.RowMap(items_then, items_now)})
