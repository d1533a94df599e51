import json
import os

import numpy as np
import pytest
from scipy import sparse

from jaxrec.baselines.als import ALS, half_step
from jaxrec.baselines.evaluate import build_baseline, evaluate_scorer, fit_baseline
from jaxrec.baselines.neighbors import ItemKNN, UserKNN
from jaxrec.config import apply_overrides, load_config
from jaxrec.data.events import EventLog, EventType, RawDataset, SideTable
from jaxrec.data.prepare import prepare
from jaxrec.errors import UserError
from jaxrec.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = ("popularity", "recent_popularity", "decayed_popularity", "itemknn", "userknn", "als",
           "bpr")


def _raw(histories: dict[str, list[str]]) -> RawDataset:
  """One click per (user, item), in the listed order, hours apart (never merged)."""
  users = [u for u, items in histories.items() for _ in items]
  items = [i for items in histories.values() for i in items]
  n = len(users)
  return RawDataset("hand", EventLog(
      user=np.array(users), item=np.array(items), timestamp=np.arange(n) * 10000,
      event_type=np.full(n, EventType.CLICK, np.int8), value=np.ones(n, np.float32),
      device=np.array(["tv"] * n), locale=np.array([""] * n)), SideTable.empty(),
      SideTable.empty())


@pytest.fixture(scope="module")
def hand(tmp_path_factory):
  """Five users with two items each: too short to hold any out, so everything is training.
  A and B go together (u1, u2), C and D (u3, u4); u5 links A and C."""
  ds = prepare(_raw({"u1": ["A", "B"], "u2": ["A", "B"], "u3": ["C", "D"], "u4": ["C", "D"],
                     "u5": ["A", "C"]}), str(tmp_path_factory.mktemp("hand") / "d"))
  item = dict(zip("ABCD", ds.vocabs["item"].lookup(np.array(list("ABCD"))).tolist()))
  user = dict(zip(["u1", "u5"], ds.vocabs["user"].lookup(np.array(["u1", "u5"])).tolist()))
  return ds, item, user


def test_itemknn_neighbours_by_hand(hand):
  ds, item, user = hand
  a, b, c, d = (item[x] for x in "ABCD")
  # A: 3 users, B: 2, co-occurring twice: cos = 2 / sqrt(3 * 2). A and C share u5 only: 1 / 3.
  knn = ItemKNN(k_neighbors=10, shrink=0).fit(ds)
  sim = knn.similarity.toarray()
  assert sim[a, b] == pytest.approx(2 / np.sqrt(6)) and sim[c, d] == pytest.approx(2 / np.sqrt(6))
  assert sim[a, c] == pytest.approx(1 / 3) and sim[b, d] == 0 and sim[a, a] == 0
  scores = knn.scores(np.array([user["u1"]]), np.array([[a, 0]]))[0]
  assert scores[b] == pytest.approx(2 / np.sqrt(6)) and scores[c] == pytest.approx(1 / 3)
  assert scores[d] == 0
  # One neighbour per item: C's is D, so having seen A no longer scores C; B's is still A.
  scores = ItemKNN(k_neighbors=1, shrink=0).fit(ds).scores(np.array([2]), np.array([[a]]))[0]
  assert scores[b] == pytest.approx(2 / np.sqrt(6)) and scores[c] == 0
  # Shrinkage divides by |a| |b| + shrink.
  shrunk = ItemKNN(k_neighbors=10, shrink=1.0).fit(ds).similarity.toarray()
  assert shrunk[a, b] == pytest.approx(2 / (np.sqrt(6) + 1))


def test_userknn_neighbours_by_hand(hand):
  ds, item, user = hand
  a, b, c, d = (item[x] for x in "ABCD")
  # u5 (A, C) has cosine 1/2 with each other user; their own training row is not a neighbour.
  scores = UserKNN(k_neighbors=10, shrink=0).fit(ds).scores(np.array([user["u5"]]),
                                                             np.array([[a, c]]))[0]
  assert scores[a] == pytest.approx(1.0) and scores[b] == pytest.approx(1.0)
  assert scores[d] == pytest.approx(1.0)


def test_als_half_step_is_the_exact_weighted_least_squares_solution():
  rng = np.random.default_rng(0)
  n, m, f, alpha, reg = 7, 11, 3, 2.0, 0.5
  counts = sparse.random(n, m, density=0.3, random_state=1,
                         data_rvs=lambda k: rng.integers(1, 4, k).astype(float)).tocsr()
  other, other_bias = rng.standard_normal((m, f)), rng.standard_normal(m)
  z = half_step(np.zeros((n, f + 1)), counts, other, other_bias, alpha, reg, steps=f + 1)
  design = np.hstack([other, np.ones((m, 1))])
  for u, r in enumerate(counts.toarray()):
    c, p = 1 + alpha * r, (r > 0).astype(float)
    lhs = design.T @ (c[:, None] * design) + reg * np.eye(f + 1)
    np.testing.assert_allclose(z[u], np.linalg.solve(lhs, design.T @ (c * (p - other_bias))),
                               atol=1e-8)


def test_als_recovers_a_planted_low_rank_structure(tmp_path):
  """Four groups of ten items; each user clicks six of their group's, so the matrix has rank 4.
  Each held-out item must rank among the group's unseen items (6 at validation, 5 at test),
  above the thirty items of the other groups: chance would put it there one time in six."""
  rng = np.random.default_rng(0)
  histories = {f"u{u}": [f"g{u % 4}i{i}" for i in rng.permutation(10)[:6]] for u in range(80)}
  ds = prepare(_raw(histories), str(tmp_path / "blocks"))
  als = ALS(factors=4, regularization=1.0, iterations=10, alpha=1.0).fit(ds)
  valid = evaluate_scorer(ds, als, "valid", batch_size=32, ks=(6,))
  test = evaluate_scorer(ds, als, "test", batch_size=32, ks=(5,))
  assert valid["num_users"] == test["num_users"] == 80
  assert valid["recall@6"] >= 0.95 and test["recall@5"] >= 0.95


def _config(name, prepared, *overrides):
  config = load_config(os.path.join(ROOT, "configs", f"movielens_{name}.py"))
  return apply_overrides(config, [f"data.dir={prepared}", *overrides])


@pytest.fixture(scope="module")
def popularity_test_ndcg(ml100k, tmp_path_factory):
  results = fit_baseline(_config("popularity", ml100k.path),
                         str(tmp_path_factory.mktemp("popularity")))
  return results["test"]["ndcg@10"]


def test_popularity_matches_the_trainers_popularity_row(ml100k, popularity_test_ndcg):
  """evaluate_scorer ranks exactly as the trainer's evaluation does: the popularity row that
  `jaxrec train` prints (jaxrec/eval/metrics/popularity.py over SequentialTask batches) is the same."""
  from jaxrec.eval.metrics.popularity import evaluate_popularity
  from jaxrec.train.sequential import SequentialTask
  task = SequentialTask(_config("sasrec", ml100k.path))
  assert evaluate_popularity(task, "test", (10,))["ndcg@10"] == pytest.approx(
      popularity_test_ndcg, abs=1e-6)


@pytest.mark.parametrize("name", ["itemknn", "userknn", "als"])
def test_each_baseline_beats_popularity_on_movielens(name, ml100k, popularity_test_ndcg,
                                                     tmp_path):
  results = fit_baseline(_config(name, ml100k.path), str(tmp_path))
  assert 0.03 < popularity_test_ndcg  # popularity itself is far above chance (about 0.003)
  for split in ("valid", "test"):
    assert results[split]["num_users"] == 943
    assert {"ndcg@10", "recall@20", "mrr@100"} <= set(results[split])
  assert results["test"]["ndcg@10"] > max(0.05, popularity_test_ndcg)
  assert "full ranking over all 1682 items" in results["protocol_detail"]
  assert results["protocol"] == "full ranking, history excluded"
  assert json.load(open(tmp_path / "results.json"))["test"] == results["test"]
  assert json.load(open(tmp_path / "config.json"))["model"]["name"] == name
  # `jaxrec eval` on the workdir fits again (deterministically) and gets the same numbers.
  from jaxrec.train.evaluate import evaluate_workdir
  assert evaluate_workdir(str(tmp_path))["ndcg@10"] == pytest.approx(results["test"]["ndcg@10"])


@pytest.mark.slow
def test_bpr_trains_through_the_training_loop(ml100k, tmp_path, monkeypatch):
  from jaxrec.train.matrix_factorization import BPRTask
  build_task = trainer.build_task
  monkeypatch.setattr(trainer, "build_task", lambda config: BPRTask(config)
                      if config.task == "bpr" else build_task(config))
  config = _config("bpr", ml100k.path, "train.num_steps=120", "train.eval_every=60",
                   "train.log_every=60", "optimizer.warmup_steps=10",
                   "optimizer.learning_rate=2e-2")
  results = trainer.train(config, str(tmp_path))
  assert results["last_step"] == 120 and results["skipped_steps"] == 0
  assert results["test"]["num_users"] == 943 and "full ranking" in results["protocol"]
  # A little over one epoch already ranks far above chance (about 0.003 NDCG@10; 0.054 here).
  assert results["test"]["ndcg@10"] > 0.03


@pytest.mark.parametrize("name", CONFIGS)
def test_configs_load_with_and_without_smoke(name):
  for suffix in ("", ":smoke"):
    config = load_config(os.path.join(ROOT, "configs", f"movielens_{name}.py{suffix}"))
    assert config.task == ("bpr" if name == "bpr" else "baseline")
    assert tuple(config.eval.ks) == (10, 20, 100)


def test_unknown_baseline_or_setting_is_a_clear_error():
  config = load_config(os.path.join(ROOT, "configs", "movielens_itemknn.py"))
  with config.unlocked():
    config.model.name = "svd"
  with pytest.raises(UserError, match="unknown model.name 'svd'"):
    build_baseline(config)
  config = apply_overrides(load_config(os.path.join(ROOT, "configs", "movielens_als.py")), [])
  with config.unlocked():
    config.model.rank = 3
  with pytest.raises(UserError, match="model.rank is not a setting of als"):
    build_baseline(config)
