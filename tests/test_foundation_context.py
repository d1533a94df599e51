"""What the foundation model reads beside its window: the request's time (model.request_gap) and
a summary of the older history (model.history_summary). Training, evaluation and serving lay
them out alike, and the query reads them."""

import os

import numpy as np
import pytest
from flax import nnx

from jaxrec.config import apply_overrides, load_config
from jaxrec.data.tokenize import gap_bucket
from jaxrec.train.trainer import build_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _task(ml100k, *overrides):
  config = load_config(os.path.join(ROOT, "configs", "movielens_foundation.py:smoke"))
  return build_task(apply_overrides(config, [f"data.dir={ml100k.path}", *overrides]))


@pytest.fixture(scope="module")
def task(ml100k):
  return _task(ml100k, "model.request_gap=True")


@pytest.fixture(scope="module")
def summary_task(ml100k):
  return _task(ml100k, "model.history_summary=True", "model.max_len=300")  # some users have less


def _model(task):
  with nnx.use_eager_sharding(False):
    return task.build_model(nnx.Rngs(0))


def test_each_training_position_reads_the_gap_until_its_target(task):
  batch = next(iter(task.train_data(0)))
  has_target = batch["targets"] > 0
  request_gap = np.asarray(task._fields(batch)["request_gap"])
  assert (batch["target_gap"][has_target] > 0).all()
  np.testing.assert_array_equal(request_gap[has_target], batch["target_gap"][has_target])


def test_evaluation_and_serving_read_the_same_request_gap(task, ml100k):
  """An evaluation window is history_batch of the history before the split, requested at the
  held-out token's time; its gap is the held-out token's."""
  batch = next(iter(task.eval_batches("test")))
  users = batch["user"][:8]
  tokens = ml100k.user_tokens(users)
  lo = ml100k.splits.valid_end[users - 2]
  now = np.array([t["timestamp"][n] for t, n in zip(tokens, lo)])
  last = np.array([t["timestamp"][n - 1] for t, n in zip(tokens, lo)])
  np.testing.assert_array_equal(batch["now_gap"][:8], gap_bucket(now - last))
  served = task.history_batch([t[:n] for t, n in zip(tokens, lo)], users, now=now)
  assert set(served) == set(batch) - {"targets", "seen", "weight"}
  for name, value in served.items():
    np.testing.assert_array_equal(value, batch[name][:8], err_msg=name)


def test_the_query_moves_with_the_request_time(task, ml100k):
  model = _model(task)
  tokens = ml100k.user_tokens([40])[0]
  last = int(tokens["timestamp"][-1])
  query = lambda seconds: np.asarray(task.query_vectors(
      model, task.history_batch([tokens], [40], now=[last + seconds])))
  assert np.abs(query(60) - query(30 * 86400)).max() > 1e-4
  np.testing.assert_allclose(query(60), query(61), atol=1e-6)  # the same bucket
  with pytest.raises(ValueError, match="request's time"):
    task.history_batch([tokens], [40])


def _mean_id(ids):
  """A stand-in item table whose vector is the id itself: a summary becomes the mean id."""
  return ids[..., None].astype(np.float32)


def test_the_summary_reads_the_items_before_the_window(summary_task, ml100k):
  max_len = summary_task.config.model.max_len
  batch = next(iter(summary_task.eval_batches("test")))
  users = batch["user"]
  tokens = ml100k.user_tokens(users)
  lo = ml100k.splits.valid_end[users - 2]
  older = [t["item"][:max(n - max_len, 0)] for t, n in zip(tokens, lo)]
  assert any(len(o) for o in older) and not all(len(o) for o in older)
  expected = [o.mean() if len(o) else 0.0 for o in older]
  evaluated = summary_task.summary(batch, _mean_id, training=False)[:, 0]
  np.testing.assert_allclose(evaluated, expected, rtol=1e-5)
  served = summary_task.history_batch([t[:n] for t, n in zip(tokens, lo)], users)
  np.testing.assert_allclose(summary_task.summary(served, _mean_id, training=False)[:, 0],
                             expected, rtol=1e-5)
  # A training window's summary holds none of the window's own items (its targets included).
  train = next(iter(summary_task.train_data(0)))
  for seen, inputs, targets in zip(train["seen"], train["inputs"], train["targets"]):
    assert not set(seen[seen > 0]) & (set(inputs) | set(targets))
  np.testing.assert_allclose(
      summary_task.summary(train, _mean_id, training=True)[:, 0],
      [s[s > 0].mean() if (s > 0).any() else 0.0 for s in train["seen"]], rtol=1e-5)


@pytest.mark.parametrize("overrides", [(), ("model.history_summary=True",)])
def test_the_older_history_reaches_the_query_only_through_the_summary(ml100k, overrides):
  task = _task(ml100k, *overrides)
  model = _model(task)
  max_len = task.config.model.max_len
  tokens = ml100k.user_tokens([40])[0]
  assert len(tokens) > max_len + 5
  other = tokens.copy()
  other["item"][:-max_len] = np.roll(other["item"][:-max_len], 1) + 1  # other older items
  query = lambda history: np.asarray(task.query_vectors(model, task.history_batch([history],
                                                                                   [40])))
  moved = np.abs(query(tokens) - query(other)).max()
  assert moved > 1e-4 if overrides else moved == 0.0
