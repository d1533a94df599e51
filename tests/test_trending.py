"""The trend prior: causal item counts by time bucket and the sequential models that read them."""

import os

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec.config import apply_overrides, load_config
from jaxrec.data.trending import DAY, TrendTable, history_pool, request_times
from jaxrec.data.vocab import FIRST_ID
from jaxrec.errors import UserError
from jaxrec.train.trainer import build_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HOUR = 3600.0


def test_counts_cover_the_complete_buckets_of_the_window_before_the_request():
  # Item 2 twice on day 0, item 3 on day 2 and once on day 9; the table's buckets are hours.
  stamps = np.array([0.0, 10.0, 2 * DAY, 9 * DAY + 5 * HOUR])
  items = np.array([2, 2, 3, 3])
  table = TrendTable(stamps, items, num_items=5, window_days=7)
  assert table.bucket == HOUR

  def counts(t):  # [V, 3]: the window's, all time's and the last day's counts
    return np.expm1(table.features(np.array([t])))[0, :, :3].round().astype(int)

  def age_days(t):
    return np.expm1(table.features(np.array([t])))[0, :, 3]

  assert counts(0.0).sum() == 0 and age_days(0.0).sum() == 0  # nothing before the first event
  assert counts(HOUR)[2].tolist() == [2, 2, 2]  # the first hour is complete
  assert counts(HOUR - 1)[2].tolist() == [0, 0, 0]  # its own bucket is not counted yet
  # Day 8: item 2's events are older than the 7-day window, item 3's day-2 event is not.
  assert counts(8 * DAY)[2].tolist() == [0, 2, 0] and counts(8 * DAY)[3].tolist() == [1, 1, 0]
  # Day 10: item 3's day-9 event is in the last day too.
  assert counts(10 * DAY)[3].tolist() == [1, 2, 1]
  # Age: days since the item's first event's bucket; an item not seen yet has none.
  np.testing.assert_allclose(age_days(8 * DAY)[[2, 3, 4]], [8.0, 6.0, 0.0], rtol=1e-6)
  assert age_days(DAY)[3] == 0.0
  assert counts(1e12)[3].tolist() == [0, 2, 0]  # far in the future: clipped, nothing recent
  with pytest.raises(ValueError, match="positive"):
    TrendTable(stamps, items, 5, window_days=0)


def test_a_long_log_gets_coarser_buckets_not_a_larger_table():
  stamps = np.array([0.0, 50 * 365 * DAY])
  table = TrendTable(stamps, np.array([2, 3]), num_items=100_000, window_days=14)
  assert table.cumulative.size <= (1 << 24) + 2 * 100_000 and table.bucket > HOUR


def _sasrec(ml100k, *overrides, model="sasrec"):
  return build_task(apply_overrides(
      load_config(os.path.join(ROOT, "configs", f"movielens_{model}.py:smoke")),
      [f"data.dir={ml100k.path}", *overrides]))


@pytest.mark.parametrize("name", ["sasrec", "foundation"])
def test_untrained_prior_ranks_by_recent_popularity_and_exports_the_same_scores(ml100k, name):
  task = _sasrec(ml100k, "model.trend_window_days=14", model=name)
  with nnx.use_eager_sharding(False):
    model = task.build_model(nnx.Rngs(0))
  batch = {k: jnp.asarray(v) for k, v in next(iter(task.eval_batches("test"))).items()}
  # With the query's own scores taken out, an untrained gate adds log1p(recent counts) only.
  items = task.personal_items(model)
  base = task.personal_query(model, batch, items) @ items.T
  prior = np.asarray(task.scores(model, batch, items) - base)
  np.testing.assert_allclose(prior, np.asarray(batch["trend"][..., 0]), atol=1e-4)
  # The features are the recent counts at each user's request time, from events before it.
  table, times = task._eval_trend("test")
  stamps, pool = history_pool(ml100k, "test")
  row, user = 0, int(batch["user"][0]) - FIRST_ID
  now = request_times(ml100k, "test")[user]
  assert times[user] == now
  at, since = table.rows(np.array(now))
  start, stop = table.start + since * table.bucket, table.start + at * table.bucket
  chosen = (stamps >= start) & (stamps < stop)
  expected = np.bincount(pool[chosen], minlength=ml100k.num_items)
  np.testing.assert_allclose(np.expm1(prior[row]), expected, atol=1e-2)
  # Exported vectors: the inner product is the model's score at the export time.
  query, vectors = task.query_vectors(model, batch), task.item_vectors(model)
  exported = np.asarray(query @ vectors.T)
  trend = jnp.asarray(task._export_trend)
  np.testing.assert_allclose(exported, np.asarray(base + trend[None, :, 0]), atol=1e-3)


@pytest.mark.parametrize("name", ["sasrec", "foundation"])
def test_training_positions_read_the_counts_at_their_target_time(ml100k, name):
  task = _sasrec(ml100k, "model.trend_window_days=14", "loss.exclude_watched=True", model=name)
  batch = next(iter(task.train_data(0)))
  assert batch["target_timestamp"].shape == batch["targets"].shape
  with nnx.use_eager_sharding(False):
    model = task.build_model(nnx.Rngs(0))
  loss = float(task.loss(model, {k: jnp.asarray(v) for k, v in batch.items()},
                         jnp.zeros(2, jnp.uint32)))
  assert np.isfinite(loss)


def test_the_gate_reads_the_same_request_gap_in_training_evaluation_and_serving(ml100k):
  from jaxrec.data import pipelines
  from jaxrec.train.sequential import gap_features
  task = _sasrec(ml100k, "model.trend_window_days=14")
  # Training: each position's gap is its target's time after its own input's.
  train = next(iter(task.train_data(0)))
  row, col = np.argwhere(train["inputs"] > 0)[0]
  hours = (train["target_timestamp"][row, col] - train["timestamp"][row, col]) / 3600.0
  np.testing.assert_allclose(gap_features(np.array(hours * 3600.0), np.array(True)),
                             [np.log1p(hours), 0.0], rtol=1e-5)
  # Evaluation: the request time after the history's last event, laid out as serving lays it out.
  batch = next(iter(task.eval_batches("test")))
  _, times = task._eval_trend("test")
  users = batch["user"][:4]
  lo, _ = pipelines._split_range(ml100k, "test")
  histories = [t[:lo[u - FIRST_ID]] for t, u in zip(ml100k.user_tokens(users), users)]
  now = times[users - FIRST_ID]
  served = task.history_batch(histories, users, 4, now)
  np.testing.assert_array_equal(served["inputs"], batch["inputs"][:4])
  np.testing.assert_allclose(served["request_gap"], batch["request_gap"][:4], rtol=1e-6)
  expected = np.log1p((now[0] - histories[0]["timestamp"][-1]) / 3600.0)
  np.testing.assert_allclose(batch["request_gap"][0], [expected, 0.0], rtol=1e-5)
  # No history: gap 0 and the flag set; serving without the request time is refused.
  empty = task.history_batch([histories[0][:0]], [users[0]], 1, now[:1])
  assert empty["request_gap"].tolist() == [[0.0, 1.0]]
  with pytest.raises(ValueError, match="request's time"):
    task.history_batch(histories, users)


@pytest.mark.parametrize("overrides", [("model.name=bert4rec",), ("loss.name=sampled_softmax",),
                                       ("model.trend_window_days=-1",)])
def test_the_prior_is_refused_where_it_cannot_apply(ml100k, overrides):
  days = [] if any("trend" in o for o in overrides) else ["model.trend_window_days=14"]
  with pytest.raises(UserError, match="trend_window_days"):
    _sasrec(ml100k, *days, *overrides)


def test_the_first_item_is_a_target_of_the_empty_history_before_it(ml100k):
  from jaxrec.data import pipelines
  options = pipelines.PipelineOptions(batch_size=16, seed=0, num_epochs=1)
  plain, first = (next(iter(pipelines.sequence_dataset(
      ml100k, "train", max_len=1000, empty_history_target=flag, options=options)))
                  for flag in (False, True))
  for row in range(16):  # max_len 1000: every training window starts at the user's first token
    n = int((plain["inputs"][row] > 0).sum())
    tokens = ml100k.user_tokens(np.array([plain["user"][row]]))[0]
    assert int(plain["targets"][row, -n - 1]) == 0
    assert int(first["targets"][row, -n - 1]) == int(tokens["item"][0])  # read from padding
    np.testing.assert_array_equal(first["targets"][row, -n:], plain["targets"][row, -n:])


@pytest.mark.slow
def test_a_served_bundle_ranks_by_the_models_score_at_the_request_time(ml100k, tmp_path):
  """Exported and served, a trend-prior SASRec gives each request the workdir's own top-k: the
  gate reads the request's gap from `now`, the index the export time's trend features."""
  import jax

  from jaxrec.rerank.config import RerankConfig
  from jaxrec.rerank.posteriors import BetaPosteriors
  from jaxrec.serve.recommender import Recommender, Request, ServingConfig
  from jaxrec.train.export import export_workdir
  from jaxrec.train.restore import restore_model
  from jaxrec.train.trainer import train
  config = apply_overrides(load_config(os.path.join(ROOT, "configs", "movielens_sasrec.py:smoke")),
                           [f"data.dir={ml100k.path}", "model.trend_window_days=14",
                            "train.num_steps=20", "train.eval_every=20"])
  workdir = str(tmp_path / "run")
  train(config, workdir)
  bundle, _ = export_workdir(workdir, str(tmp_path / "export"), exact=True)
  served = Recommender(bundle, ServingConfig(candidates=100, rerank=RerankConfig(mmr_lambda=1.0)),
                       BetaPosteriors(0))
  run = restore_model(workdir)
  model = nnx.merge(run.graphdef, run.state)
  items = np.asarray(run.task.item_vectors(model))
  query = jax.jit(run.task.query_vectors)
  user = 17
  tokens = ml100k.user_tokens([user])[0]
  raw_user = str(ml100k.vocabs["user"].raw(np.array([user]))[0])
  queries = []
  for days_later in (0.01, 60.0):  # a gap of minutes, and one of two months
    now = int(tokens["timestamp"][-1] + days_later * DAY)
    answer = served.recommend([Request(user_id=raw_user, k=10, now=now)])[0]
    queries.append(np.asarray(query(model, run.task.history_batch([tokens], [user], 1, [now]))))
    scores = queries[-1][0] @ items.T
    scores[:FIRST_ID] = -np.inf
    scores[tokens["item"]] = -np.inf
    want = np.argsort(-scores, kind="stable")[:10]
    assert [x["item_id"] for x in answer["items"]] == \
        list(ml100k.vocabs["item"].raw(want).astype(str))
  # The trained gate reads the gap: the same history gets another query two months later.
  assert np.abs(queries[0] - queries[1]).max() > 1e-4
