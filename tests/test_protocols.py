"""Evaluation protocols as named choices (issue 22): history excluded or not (eval.exclude_seen),
every interaction of a temporal test window scored with users without history reported apart,
`jaxrec eval --config.eval.*` without retraining, and the time-aware popularity baselines."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.baselines.evaluate import evaluate_scorer, fit_baseline
from jaxrec.baselines.popularity import DAY, DecayedPopularity, RecentPopularity, history_pool
from jaxrec.cli import main
from jaxrec.config import apply_overrides, load_config
from jaxrec.data import pipelines
from jaxrec.data.prepare import PrepareOptions, prepare
from jaxrec.errors import UserError
from jaxrec.eval import protocols
from jaxrec.eval.metrics import ranking
from jaxrec.train.tasks import build_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RANKING_TASKS = ("sasrec", "bert4rec", "gru4rec", "two_tower", "bpr", "foundation")


def _config(name, data_dir, *overrides):
  config = load_config(os.path.join(ROOT, "configs", f"movielens_{name}.py:smoke"))
  return apply_overrides(config, [f"data.dir={data_dir}", *overrides])


@pytest.fixture(scope="module")
def temporal(ml100k_raw, tmp_path_factory):
  """MovieLens-100K split forward in time: train before the 0.8 quantile, test after 0.9."""
  return prepare(ml100k_raw, str(tmp_path_factory.mktemp("temporal") / "ml"),
                 PrepareOptions(split="temporal", split_times=(0.8, 0.9)))


def _first_batch(task, split="test"):
  return next(iter(task.eval_batches(split)))


@pytest.mark.parametrize("name", RANKING_TASKS)
@pytest.mark.parametrize("exclude", [True, False])
def test_exclude_seen_decides_whether_a_users_history_can_be_ranked(name, exclude, ml100k):
  """Every catalogue-ranking task's eval step, with a query that scores each user's own history
  highest: with exclude_seen=False the history fills the top of the list (nothing is filtered,
  in the model or after it); with True none of it appears."""
  task = build_task(_config(name, ml100k.path, f"eval.exclude_seen={exclude}"))
  assert task.protocol("test")["protocol"] == (protocols.EXCLUDED if exclude
                                               else protocols.NOT_EXCLUDED)
  assert task.protocol("test")["exclude_seen"] is exclude
  batch = {k: np.asarray(v) for k, v in _first_batch(task).items()}
  seen = batch["seen"]
  num_items = task.data.num_items
  rows = np.arange(len(seen))[:, None]
  query = np.zeros((len(seen), num_items), np.float32)
  query[rows, seen] = 1.0 + np.arange(seen.shape[1])[None, :]  # the latest items highest
  query[:, :2] = 0.0
  task.personal_query = lambda model, b, items=None: jnp.asarray(query)  # the scoring hook
  out = task.eval_step(None, batch, jnp.eye(num_items, dtype=jnp.float32))
  top = np.asarray(out[ranking.TOP_ITEMS])
  real = batch["weight"] > 0
  in_history = np.array([np.isin(t, s[s > 1]) for t, s in zip(top, seen)])[real]
  if exclude:
    assert not in_history.any()
  else:  # users with at least 10 earlier items see only those
    long = (seen > 1).sum(1)[real] >= ranking.LIST_K
    assert long.any() and in_history[long].all()


def test_baseline_protocol_and_exclusion(ml100k):
  """The closed-form baselines' evaluation: the same named protocol and the same switch."""
  from jaxrec.baselines.evaluate import Popularity, protocol
  model = Popularity().fit(ml100k)
  excluded = evaluate_scorer(ml100k, model, "test", ks=(10,))
  kept = evaluate_scorer(ml100k, model, "test", ks=(10,), exclude_seen=False)
  # Most users have rated the most popular films: left in, they take the list and miss.
  assert kept["ndcg@10"] < excluded["ndcg@10"]
  assert protocol(ml100k, "test")["protocol"] == protocols.EXCLUDED
  assert protocol(ml100k, "test", {"exclude_seen": False})["protocol"] == protocols.NOT_EXCLUDED


def test_every_interaction_of_the_test_window_is_a_target(temporal):
  """eval.max_targets=0 scores each user's whole test window, once per user, and users without
  history before the window are reported apart as well as overall."""
  lo, hi = temporal.splits.valid_end, temporal.splits.length
  batches = list(pipelines.sequence_dataset(
      temporal, "test", max_len=5, max_targets=0, with_seen=True,
      options=pipelines.PipelineOptions(batch_size=64)))
  real = np.concatenate([b["weight"] for b in batches]) > 0
  users = np.concatenate([b["user"] for b in batches])[real] - 2
  targets = np.concatenate([b["targets"] for b in batches])[real]
  expected = hi - lo
  assert sorted(users) == list(np.flatnonzero(expected > 0))
  assert ((targets > 0).sum(1) == expected[users]).all()
  assert (targets > 0).sum() == temporal.splits.counts()["test"]  # every test token, once
  for user, row in zip(users[:20], targets[:20]):
    tokens = temporal.user_tokens(np.array([user + 2]))[0]
    assert list(row[row > 0]) == list(tokens["item"][lo[user]:hi[user]])

  config = apply_overrides(load_config(os.path.join(ROOT, "configs",
                                                    "movielens_popularity.py")),
                           [f"data.dir={temporal.path}", "data.split=temporal",
                            "eval.max_targets=0"])
  from jaxrec.baselines.evaluate import evaluate_baseline
  result = evaluate_baseline(config, "test")
  history = lo[expected > 0] > 0
  assert result["num_users"] == (expected > 0).sum()
  assert result["with_history/num_users"] == history.sum() > 0
  assert result["no_history/num_users"] == (~history).sum() > 0
  overall = (result["with_history/ndcg@10"] * history.sum()
             + result["no_history/ndcg@10"] * (~history).sum()) / len(history)
  assert result["ndcg@10"] == pytest.approx(overall)
  assert protocols.ranking_protocol(temporal, "test", config.eval)["targets"] == (
      "every interaction in the window")
  first = evaluate_baseline(apply_overrides(config, ["eval.max_targets=1"]), "test")
  assert first["ndcg@10"] != pytest.approx(result["ndcg@10"])


def test_recent_popularity_counts_only_interactions_before_the_cut_off(temporal):
  t1, t2 = temporal.manifest["split"]["t1"], temporal.manifest["split"]["t2"]
  for split, cut in (("valid", t1), ("test", t2)):
    stamps, items = history_pool(temporal, split)
    assert stamps.max() < cut and len(stamps) == (
        temporal.splits.train_end if split == "valid" else temporal.splits.valid_end).sum()
  model = RecentPopularity(window_days=(7,)).fit(temporal)
  scorer = model.for_split("valid")
  scores = scorer.scores(np.array([2, 3]), np.zeros((2, 1), np.int32))
  tokens = temporal.user_tokens(np.arange(temporal.num_users) + 2)
  every = np.concatenate([t for t in tokens])
  window = every[(every["timestamp"] >= t1 - 7 * DAY) & (every["timestamp"] < t1)]
  expected = np.bincount(window["item"], minlength=temporal.num_items)
  assert (np.floor(scores[0]) == expected).all() and (scores[0] == scores[1]).all()
  # Anything in the validation window itself (at or after t1) would change the counts.
  assert np.isin(every["item"][every["timestamp"] >= t1], np.flatnonzero(expected == 0)).any()
  decayed = DecayedPopularity(half_life_days=(7,)).fit(temporal).for_split("valid")
  weights = decayed.scores(np.array([2]), np.zeros((1, 1), np.int32))[0]
  assert (weights[np.bincount(every["item"][every["timestamp"] < t1],
                              minlength=temporal.num_items) == 0] == 0).all()


def test_recent_popularity_picks_its_window_on_validation(temporal, tmp_path):
  model = RecentPopularity(window_days=(1, 7, 30)).fit(temporal)
  model.select(lambda: {"ndcg@10": {1: 0.1, 7: 0.3, 30: 0.2}[model.value]})
  assert model.value == 7 and model.report()["selection"]["window_days"] == 7

  config = _config("recent_popularity", temporal.path, "data.split=temporal",
                   "eval.max_targets=0")
  results = fit_baseline(config, str(tmp_path))
  selection = results["selection"]
  by_window = selection["valid_by_window_days"]
  assert set(by_window) == {"7", "30"}
  assert by_window[f"{selection['window_days']:g}"] == max(by_window.values())
  assert results["valid"]["ndcg@10"] == pytest.approx(max(by_window.values()))
  assert results["protocol"] == protocols.EXCLUDED and "with_history/ndcg@10" in results["test"]
  popularity = fit_baseline(_config("popularity", temporal.path, "data.split=temporal",
                                    "eval.max_targets=0"), str(tmp_path / "pop"))
  # Forward in time, what is popular now beats what was popular over the whole log.
  assert results["test"]["ndcg@10"] > popularity["test"]["ndcg@10"]
  decayed = fit_baseline(_config("decayed_popularity", temporal.path, "data.split=temporal",
                                 "eval.max_targets=0"), str(tmp_path / "decayed"))
  assert decayed["selection"]["half_life_days"] in (7, 30)


@pytest.fixture(scope="module")
def sasrec_workdir(smoke_sasrec):
  """conftest's run of configs/movielens_sasrec.py:smoke on MovieLens-100K: this module's
  _config("sasrec", ml100k.path) exactly, shared with other modules. `jaxrec eval` only reads
  it (the test checks that results.json is not rewritten)."""
  return smoke_sasrec[0]


def test_eval_override_scores_a_trained_workdir_under_the_other_protocol(sasrec_workdir, capsys):
  from jaxrec.train.evaluate import evaluate_workdir
  before = os.path.getmtime(os.path.join(sasrec_workdir, "results.json"))
  assert main(["eval", "--workdir", sasrec_workdir, "--json",
               "--config.eval.exclude_seen=False"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["protocol"] == protocols.NOT_EXCLUDED and out["exclude_seen"] is False
  assert out["eval_overrides"] == ["eval.exclude_seen=False"] and out["num_users"] == 943
  default = evaluate_workdir(sasrec_workdir)
  assert default["protocol"] == protocols.EXCLUDED and out["step"] == default["step"]
  assert out["ndcg@10"] != pytest.approx(default["ndcg@10"])
  assert os.path.getmtime(os.path.join(sasrec_workdir, "results.json")) == before  # no training
  assert main(["eval", "--workdir", sasrec_workdir, "--config.model.dim=8"]) == 2
  assert "--config.eval.* overrides only" in capsys.readouterr().err
  assert main(["eval", "--workdir", sasrec_workdir, "--config.eval.nope=1"]) == 2


def test_eval_override_on_a_baseline_workdir(ml100k, tmp_path, capsys):
  fit_baseline(_config("popularity", ml100k.path), str(tmp_path))
  assert main(["eval", "--workdir", str(tmp_path), "--json",
               "--config.eval.exclude_seen=False"]) == 0
  out = json.loads(capsys.readouterr().out)
  assert out["protocol"] == protocols.NOT_EXCLUDED


def test_an_old_workdir_config_without_exclude_seen_takes_the_override(ml100k, tmp_path):
  from jaxrec.train.evaluate import with_eval_overrides
  import ml_collections
  config = ml_collections.ConfigDict({"task": "baseline", "eval": {"ks": [10], "max_targets": 1}})
  assert with_eval_overrides(config, ["eval.exclude_seen=False"]).eval.exclude_seen is False
  with pytest.raises(UserError, match="eval"):
    with_eval_overrides(config, ["data.dir=x"])
