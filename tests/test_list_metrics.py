import json
import os
import types

import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec import cli
from jaxrec.config import apply_overrides, load_config
from jaxrec.eval.metrics import ranking
from jaxrec.eval.metrics.lists import (ListCollector, format_report, list_report,
                                      popularity_lists, popularity_order)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEYS = ("coverage", "exposure_gini", "intra_list_diversity", "genre_entropy", "calibration_kl",
        "novelty", "serendipity")


def test_top_items_come_from_the_masked_ranking():
  # Ids 0, 1 are padding/OOV; row 0 saw item 5, row 1 saw 2, 3 and 4 so only 5 and 6 remain.
  scores = jnp.array([[9., 9., 1., 2., 3., 8., 7.],
                      [9., 9., 4., 5., 6., 1., 2.]])
  masked = ranking.mask_scores(scores, jnp.array([[5, 0, 0], [2, 3, 4]]))
  out = ranking.topk_metrics(masked, jnp.array([[6], [5]]), ks=(2,), list_k=4)
  # Row 0 ranks 6 > 4 > 3 > 2; row 1 ranks 6 > 5, then only masked items: 0 = none.
  np.testing.assert_array_equal(out[ranking.TOP_ITEMS], [[6, 4, 3, 2], [6, 5, 0, 0]])
  np.testing.assert_allclose(out["recall@2"], [1, 1])
  assert ranking.TOP_ITEMS not in ranking.topk_metrics(masked, jnp.array([[6], [5]]), ks=(2,))


def _tiny_dataset():
  # 6 ids (4 catalogue items 2..5); popularity order 3, 5, 2, 4; genres 2, 3 -> 1 and 4, 5 -> 2.
  return types.SimpleNamespace(item_counts=np.array([0, 0, 5, 9, 1, 7]),
                               item_features={"genres": np.array([[0], [0], [1], [1], [2], [2]])})


def test_collector_keeps_weighted_rows_and_reduces_histories():
  lists = ListCollector(_tiny_dataset())
  lists.add(np.array([[5, 2], [4, 3]]), {"seen": np.array([[3, 4], [4, 0]]),
                                         "targets": np.array([[5], [2]])}, np.array([1., 0.]))
  lists.add(np.array([[2, 4]]), {"seen": np.array([[3, 5, 2, 0]]), "targets": np.array([[4]])},
            np.array([1.]))
  a = lists.arrays()
  assert len(lists) == 2                                  # the zero-weight row is dropped
  np.testing.assert_array_equal(a["lists"], [[5, 2], [2, 4]])
  np.testing.assert_array_equal(a["targets"], [[5], [4]])
  # Popularity lists without the seen items: [5, 2] (3 seen), then [4, 0] (only 4 is left).
  np.testing.assert_array_equal(a["expected"], [[5, 2], [4, 0]])
  # History genres: [3, 4] is half genre 1, half genre 2; [3, 5, 2] is 2/3 genre 1.
  np.testing.assert_allclose(a["history_genres"][:, 1:], [[0.5, 0.5], [2 / 3, 1 / 3]])


def test_popularity_lists_skip_seen_items():
  order = popularity_order(np.array([0, 0, 5, 9, 1, 7, 3]))     # 3, 5, 2, 6, 4
  np.testing.assert_array_equal(order, [3, 5, 2, 6, 4])
  seen = np.array([[3, 0], [5, 2], [0, 0]])
  np.testing.assert_array_equal(popularity_lists(order, seen, 2), [[5, 2], [3, 6], [3, 5]])


def test_report_by_hand(monkeypatch):
  # Two users. Popularity lists (k=2): user 0 saw 3 -> [5, 2]; user 1 saw nothing -> [3, 5].
  lists = ListCollector(_tiny_dataset())
  lists.add(np.array([[2, 4], [4, 5]]), {"seen": np.array([[3], [0]]),
                                         "targets": np.array([[4], [4]])}, np.ones(2))
  report = list_report(lists)
  assert report["users"] == 2 and report["list_length"] == 2
  assert report["coverage"] == pytest.approx(3 / 4)       # 2, 4, 5 shown; 3 never
  # List 0 has one genre-1 and one genre-2 item, list 1 ([4, 5]) only genre 2.
  assert report["genre_entropy"] == pytest.approx(np.log(2) / 2)
  # User 0's history is all genre 1, the list half: KL = log(1 / (0.99 * 0.5 + 0.01)); user 1
  # has no history and is left out.
  assert report["calibration_kl"] == pytest.approx(np.log(1 / 0.505))
  # Held-out 4 is in both lists and in neither popularity list: 1 of 2 items each.
  assert report["serendipity"] == pytest.approx(0.5)
  assert "intra_list_diversity" not in report
  assert any("item vectors" in note for note in report["notes"])
  # Computed slice by slice, the metrics are the same.
  monkeypatch.setattr("jaxrec.eval.metrics.lists.CHUNK", 1)
  sliced = list_report(lists)
  for key in ("genre_entropy", "calibration_kl", "serendipity", "novelty"):
    assert sliced[key] == pytest.approx(report[key])
  assert "no catalogue lists" in list_report(ListCollector(_tiny_dataset()))["notes"][0]
  assert "coverage" in format_report(report) and "not reported" in format_report(report)


@pytest.fixture(scope="module")
def sasrec_workdir(smoke_sasrec):
  return smoke_sasrec  # conftest's run (workdir, results), shared with other modules


def test_eval_reports_beyond_accuracy_of_the_ranked_lists(sasrec_workdir, capsys, monkeypatch):
  import jaxrec.train.evaluate as evaluate
  collectors = []

  class Recording(ListCollector):  # keeps the lists the one evaluation below gathers
    def __init__(self, ds):
      super().__init__(ds)
      collectors.append(self)

  monkeypatch.setattr(evaluate, "ListCollector", Recording)
  sasrec_workdir, trained = sasrec_workdir
  assert cli.main(["eval", "--workdir", sasrec_workdir, "--json"]) == 0
  result = json.loads(capsys.readouterr().out)
  report = result["beyond_accuracy"]
  assert report["users"] == result["num_users"] == 943 and report["list_length"] == 10
  assert report["notes"] == []
  for key in KEYS:
    assert np.isfinite(report[key]), key
  for key in ("coverage", "exposure_gini", "serendipity"):
    assert 0 <= report[key] <= 1, key
  assert 0 < report["intra_list_diversity"] <= 2 and report["novelty"] > 0
  assert 0 <= report["genre_entropy"] <= np.log(19) and report["calibration_kl"] >= 0
  # Training reports the same lists for its best checkpoint on the test split.
  numbers = lambda r: {k: v for k, v in r.items() if k != "notes"}
  assert numbers(trained["beyond_accuracy"]) == pytest.approx(numbers(report))

  # The lists are the ones the accuracy metrics ranked: with leave-one-out, recall@10 is the
  # share of users whose held-out item is in their list; seen items were masked out.
  a = collectors[0].arrays()
  hits = (a["lists"] == a["targets"][:, :1]).any(axis=1)
  assert hits.mean() == pytest.approx(result["recall@10"], abs=1e-6)
  assert (a["lists"] >= 2).all() and (a["expected"] >= 2).all()

  # The text report prints them under the accuracy table (same result, not evaluated again).
  monkeypatch.setattr(evaluate, "evaluate_workdir", lambda workdir, split, overrides=(): result)
  assert cli.main(["eval", "--workdir", sasrec_workdir]) == 0
  printed = capsys.readouterr().out
  assert printed.index("ndcg@10") < printed.index("beyond accuracy, top-10 lists of 943 users")
  assert "intra_list_diversity" in printed


def test_popularity_baseline_has_no_serendipity(ml100k, tmp_path):
  from jaxrec.config import save_config
  from jaxrec.train.evaluate import evaluate_workdir
  config = apply_overrides(load_config(os.path.join(ROOT, "configs/movielens_popularity.py")),
                           [f"data.dir={ml100k.path}"])
  save_config(config, os.path.join(tmp_path, "config.json"))
  report = evaluate_workdir(str(tmp_path))["beyond_accuracy"]
  # Its lists are the expected (popularity) lists themselves.
  assert report["serendipity"] == 0
  assert report["users"] == 943 and report["coverage"] < 0.2
  assert "intra_list_diversity" not in report
