import os

import jax
import pytest
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.config import apply_overrides, load_config
from jaxrec.train.trainer import Run, train
from jaxrec.models.frequency import StreamingFrequency
from jaxrec.train.two_tower import NEG, corrected_logits, mixed_negative_logits

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(prepared, *overrides):
  return apply_overrides(load_config(os.path.join(ROOT, "configs", "movielens_two_tower.py:smoke")),
                         [f"data.dir={prepared}", *overrides])


def test_logq_correction_follows_the_formula():
  q = jax.random.normal(jax.random.key(0), (4, 3))
  v = jax.random.normal(jax.random.key(1), (4, 3))
  positives = jnp.array([5, 7, 5, 9])
  log_q = jnp.log(jnp.array([0.3, 0.05, 0.3, 0.01]))  # per column: item 5 twice, same estimate
  logits = np.asarray(corrected_logits(q, v, positives, log_q, 0.1))
  expected = np.asarray(q @ v.T) / 0.1 - np.asarray(log_q)[None, :]
  accidental = [(0, 2), (2, 0)]  # rows 0 and 2 share item 5: each is not the other's negative
  for i in range(4):
    for j in range(4):
      if (i, j) in accidental:
        assert logits[i, j] == NEG
      else:
        np.testing.assert_allclose(logits[i, j], expected[i, j], rtol=1e-5)


def test_padding_columns_are_masked():
  q = v = jnp.eye(3)
  logits = np.asarray(corrected_logits(q, v, jnp.array([4, 0, 6]), jnp.zeros(3), 1.0))
  assert (logits[:, 1] == NEG).all() and logits[0, 2] == 0 and logits[0, 0] == 1


def test_mixed_negatives_are_corrected_by_their_uniform_rate():
  q = jax.random.normal(jax.random.key(0), (2, 3))
  u = jax.random.normal(jax.random.key(1), (4, 3))
  negatives, positives = jnp.array([3, 9, 4, 5]), jnp.array([9, 7])
  logits = np.asarray(mixed_negative_logits(q, negatives, u, positives, 102, 0.5))
  expected = np.asarray(q @ u.T) / 0.5 - np.log(4 / 100)  # 4 draws over 100 real items
  assert logits[0, 1] == NEG  # row 0's positive drawn as a negative: an accidental hit
  mask = np.ones_like(logits, bool)
  mask[0, 1] = False
  np.testing.assert_allclose(logits[mask], expected[mask], rtol=1e-5)


def test_streaming_frequency_tracks_occurrences_per_batch():
  estimator = StreamingFrequency(num_items=5, alpha=0.5)
  update = nnx.jit(lambda e, items: e.update(items))
  first = np.asarray(update(estimator, jnp.array([2, 2, 3])))
  # First sighting at step 1: item 2 twice (0.5 steps per occurrence), item 3 once.
  np.testing.assert_allclose(np.exp(-first), [0.5, 0.5, 1.0])
  for _ in range(3):  # item 2 in every batch, item 3 never again
    update(estimator, jnp.array([2, 4]))
  # Item 2 at steps 2..4, once each: gap 0.5 -> 0.75 -> 0.875 -> 0.9375.
  np.testing.assert_allclose(np.exp(-np.asarray(estimator.log_frequency(jnp.array([2])))),
                             [0.9375])
  update(estimator, jnp.array([3]))  # step 5, four steps after its last sighting
  np.testing.assert_allclose(estimator.gap[...][3], 0.5 * 1.0 + 0.5 * 4.0)
  # The estimate converges to the true rate: an item in every other batch -> gap 2.
  estimator = StreamingFrequency(num_items=3, alpha=0.2)
  for step in range(200):
    update(estimator, jnp.array([2 if step % 2 == 0 else 1]))
  np.testing.assert_allclose(estimator.gap[...][2], 2.0, rtol=1e-3)


@pytest.mark.slow
def test_frequency_estimate_is_updated_by_training_not_by_the_optimizer(ml100k):
  run = Run(_config(ml100k.path, "optimizer.weight_decay=0.5"))
  before = float(nnx.merge(run.graphdef, run.state).frequency.step[...])
  batch = run.partitioner.shard_inputs(next(iter(run.task.train_data(0))))
  run.state, run.opt_state, out = run.train_step(run.state, run.opt_state, batch, jnp.int32(1))
  model = nnx.merge(run.graphdef, run.state)
  assert before == 0 and float(model.frequency.step[...]) == 1
  seen = np.asarray(model.frequency.last_seen[...]) == 1
  assert seen.sum() > 50 and np.all(np.asarray(model.frequency.gap[...])[seen] <= 1.0)


@pytest.mark.slow
@pytest.mark.parametrize("encoder", ["pooling", "sasrec"])
def test_two_tower_trains_and_evaluates(ml100k, tmp_path, encoder):
  results = train(_config(ml100k.path, "loss.uniform_negatives=64", f"model.query_encoder={encoder}"),
                  str(tmp_path))
  assert results["test"]["num_users"] == 943
  assert 0 <= results["test"]["ndcg@10"] <= 1 and results["skipped_steps"] == 0


def test_cold_items_get_metadata_embeddings(ml100k):
  run = Run(_config(ml100k.path))
  task = run.task
  model = nnx.merge(run.graphdef, run.state)
  items = jnp.arange(2, 300)
  features = task._features(task.item_features, items)
  cold = np.asarray(model.item_tower(items, features, keep_id=jnp.zeros(len(items))))
  assert np.all(np.isfinite(cold))
  np.testing.assert_allclose(np.linalg.norm(cold, axis=1), 1.0, rtol=1e-4)
  # Different metadata, different vectors: not one shared "unknown item" embedding.
  distinct = len({tuple(np.round(row, 4)) for row in cold})
  assert distinct > 0.9 * len(items)
  assert np.std(cold @ cold.T) > 0.01
  # Two items with identical metadata get the same cold embedding: it comes from metadata alone.
  genres = np.asarray(features["genres"])
  same = [(i, j) for i in range(40) for j in range(i + 1, 40)
          if all(np.array_equal(np.asarray(features[k][i]), np.asarray(features[k][j]))
                 for k in features)]
  for i, j in same:
    np.testing.assert_allclose(cold[i], cold[j], atol=1e-6)
  assert genres.shape[1] == 8


@pytest.mark.slow
def test_cold_start_report_on_items_released_after_the_cutoff(tmp_path):
  from jaxrec.data.prepare import PrepareOptions, prepare
  from jaxrec.data.synthetic import SyntheticConfig, generate
  from jaxrec.eval.metrics.cold_start import cold_start_report
  raw = generate(SyntheticConfig(num_users=300, num_items=400, num_events=60_000,
                                 new_item_fraction=0.3, seed=1))
  ds = prepare(raw, str(tmp_path / "synthetic"), PrepareOptions(split="temporal",
                                                                split_times=(0.7, 0.85)))
  config = _config(ds.path, "eval.max_targets=1", "train.num_steps=10")
  config.data.dataset = "synthetic"
  train(config, str(tmp_path / "run"))
  run = Run(config)
  report = cold_start_report(run, "test")
  assert report["cold_items"] > 0 and report["users"] > 0
  assert 0 <= report["model"]["recall@20"] <= 1
  assert report["popularity"]["recall@20"] == 0  # never-seen items have no popularity to rank by
  # Ranking only the new items can only move each target up: recall among them is at least as high.
  among = report["model_among_new_items"]
  assert among["num_users"] == report["users"]
  for k in (10, 20):
    assert report["model"][f"recall@{k}"] <= among[f"recall@{k}"] <= 1


def test_shuffle_ties_is_refused_where_no_next_item_window_trains(ml100k):
  from jaxrec.errors import UserError
  from jaxrec.train.tasks import build_task
  with pytest.raises(UserError, match="data.shuffle_ties .* task 'two_tower'"):
    build_task(_config(ml100k.path, "data.shuffle_ties=True"))
