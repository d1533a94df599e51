"""The foundation model's request time (model.request_gap): training, evaluation and serving lay
out the same gap, and the query reads it."""

import os

import numpy as np
import pytest
from flax import nnx

from jaxrec.config import apply_overrides, load_config
from jaxrec.data.tokenize import gap_bucket
from jaxrec.train.trainer import build_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def task(ml100k):
  config = load_config(os.path.join(ROOT, "configs", "movielens_foundation.py:smoke"))
  return build_task(apply_overrides(config, [f"data.dir={ml100k.path}", "model.request_gap=True"]))


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
  with nnx.use_eager_sharding(False):
    model = task.build_model(nnx.Rngs(0))
  tokens = ml100k.user_tokens([40])[0]
  last = int(tokens["timestamp"][-1])
  query = lambda seconds: np.asarray(task.query_vectors(
      model, task.history_batch([tokens], [40], now=[last + seconds])))
  assert np.abs(query(60) - query(30 * 86400)).max() > 1e-4
  np.testing.assert_allclose(query(60), query(61), atol=1e-6)  # the same bucket
  with pytest.raises(ValueError, match="request's time"):
    task.history_batch([tokens], [40])
