import math

import numpy as np
import pytest

from jaxrec.eval.metrics.heads import (RankingAccumulator, auc, calibration, grouped_ndcg,
                                         head_metrics, logloss)

L3 = math.log2(3)  # discount of the second rank is 1 / L3


def _brute_auc(labels, scores):
  """Pairwise counting: each (positive, negative) pair scores 1, 0.5 on a tie, 0 otherwise."""
  pos, neg = scores[labels == 1], scores[labels == 0]
  diff = pos[:, None] - neg[None, :]
  return ((diff > 0) + 0.5 * (diff == 0)).mean()


def test_auc_by_hand_with_ties():
  labels = [1, 0, 1, 0, 1, 0]
  scores = [0.9, 0.9, 0.5, 0.5, 0.5, 0.1]
  # Positives win 2.5 (ties the 0.9 negative), 1.5 and 1.5 of 3 pairs each.
  assert auc(labels, scores) == pytest.approx(5.5 / 9)
  # Weight 2 on the first positive counts its pairs twice.
  assert auc(labels, scores, [2, 1, 1, 1, 1, 1]) == pytest.approx(8 / 12)
  # Weight 0 drops a row, even one holding NaN.
  assert auc(labels + [1], scores + [float("nan")], [1] * 6 + [0]) == pytest.approx(5.5 / 9)


def test_auc_matches_pairwise_counting_with_ties_and_weights():
  rng = np.random.default_rng(0)
  for _ in range(5):
    labels = rng.integers(0, 2, 80)
    scores = rng.integers(0, 6, 80).astype(np.float32)  # few values: many ties
    weights = rng.integers(0, 4, 80)
    weights[:2], labels[:2] = 1, [0, 1]
    expected = _brute_auc(np.repeat(labels, weights), np.repeat(scores, weights))
    assert auc(labels, scores, weights) == pytest.approx(expected)
    assert auc(labels, scores) == pytest.approx(_brute_auc(labels, scores))


def test_auc_is_nan_for_a_single_class():
  assert math.isnan(auc([1, 1, 1], [0.1, 0.2, 0.3]))
  assert math.isnan(auc([0, 0], [0.1, 0.2]))
  assert math.isnan(auc([1, 0], [0.1, 0.2], [1, 0]))  # the only negative is dropped
  assert math.isnan(auc([1, 0], [float("nan"), 0.2]))


def test_logloss_by_hand():
  # Soft label 0.5 at p = 0.5 costs log 2, like a hard one.
  expected = -(math.log(0.8) + math.log(0.6) + math.log(0.5)) / 3
  assert logloss([1, 0, 0.5], [0.8, 0.4, 0.5]) == pytest.approx(expected)
  assert logloss([1, 0], [0.8, 0.4], [3, 1]) == pytest.approx(
      -(3 * math.log(0.8) + math.log(0.6)) / 4)
  # A certain miss is clipped to eps instead of costing infinity.
  assert logloss([1], [0.0]) == pytest.approx(-math.log(1e-7))
  assert logloss([0], [1.0], eps=1e-3) == pytest.approx(-math.log(1e-3))
  with pytest.raises(ValueError, match=r"\[0, 1\]"):
    logloss([2], [0.5])


def test_calibration():
  assert calibration([1, 0, 0, 1], [0.5] * 4) == pytest.approx(1.0)
  assert calibration([1, 0, 0, 1], [0.3, 0.2, 0.1, 0.2]) == pytest.approx(0.4)
  assert calibration([1, 0], [0.6, 0.2], [1, 3]) == pytest.approx((0.6 + 0.6) / 4 / (1 / 4))
  assert math.isnan(calibration([0, 0], [0.1, 0.2]))


# Three groups, interleaved: 7 ranks gains 0, 1, 3 by score; 2 has no positive gain; 5 is perfect.
GROUPS = np.array([7, 2, 5, 7, 2, 7, 5])
GAINS = np.array([3, 0, 2, 0, 0, 1, 1.0])
SCORES = np.array([0.2, 0.7, 0.8, 0.9, 0.3, 0.5, 0.1])
NDCG_7 = (1 / L3 + 3 / 2) / (3 + 1 / L3)


def test_grouped_ndcg_by_hand():
  # Group 2 has no positive gain and stays out of the mean.
  assert grouped_ndcg(GROUPS, GAINS, SCORES) == pytest.approx((NDCG_7 + 1) / 2)
  assert grouped_ndcg(GROUPS, GAINS, SCORES, k=1) == pytest.approx((0 + 1) / 2)
  assert grouped_ndcg(GROUPS, GAINS, SCORES, k=2) == pytest.approx(
      ((1 / L3) / (3 + 1 / L3) + 1) / 2)
  # Row order does not matter.
  flip = slice(None, None, -1)
  assert grouped_ndcg(GROUPS[flip], GAINS[flip], SCORES[flip]) == pytest.approx((NDCG_7 + 1) / 2)
  # Scoring by the gains is the perfect order.
  assert grouped_ndcg(GROUPS, GAINS, GAINS) == pytest.approx(1.0)
  assert math.isnan(grouped_ndcg([1, 1], [0, 0], [0.3, 0.4]))


def test_grouped_ndcg_weights():
  # Dropping group 7's top row (gain 0) leaves it ranked 1, 3 against the ideal 3, 1.
  weights = np.array([1, 1, 2, 0, 1, 1, 2])
  ndcg_7 = (1 + 3 / L3) / (3 + 1 / L3)
  # Group 5's rows weigh 2, so it counts twice in the mean.
  assert grouped_ndcg(GROUPS, GAINS, SCORES, weights=weights) == pytest.approx((ndcg_7 + 2) / 3)


def test_grouped_ndcg_breaks_ties_pessimistically():
  assert grouped_ndcg([0, 0], [1, 0], [0.5, 0.5]) == pytest.approx(1 / L3)
  assert grouped_ndcg([0, 0], [0, 1], [0.5, 0.5]) == pytest.approx(1 / L3)
  assert math.isnan(grouped_ndcg([0, 0], [1, 0], [float("nan"), 0.5]))
  with pytest.raises(ValueError, match=">= 0"):
    grouped_ndcg([0], [-1], [0.5])


def test_regression_head_metrics():
  labels, preds = [0, 0, 2, 5], [0.1, 0.3, 0.2, 1.0]
  out = head_metrics("watch", labels, preds, kind="regression")
  assert out == pytest.approx({
      "watch/rmse": math.sqrt((0.01 + 0.09 + 1.8 ** 2 + 4 ** 2) / 4),
      "watch/auc": 3 / 4,  # 1.0 beats both non-watchers, 0.2 only the 0.1
      "watch/calibration": 0.4 / 1.75})
  assert set(head_metrics("click", [1, 0], [0.7, 0.2])) == {
      "click/auc", "click/logloss", "click/calibration"}
  with pytest.raises(ValueError, match="binary"):
    head_metrics("x", [1], [1], kind="ordinal")


def test_accumulator_equals_the_functions_on_the_whole_split():
  rng = np.random.default_rng(1)
  n = 50
  click = rng.integers(0, 2, n).astype(np.float32)
  watch = click * rng.exponential(size=n)
  p_click, p_watch = rng.random(n), rng.random(n) * 2
  groups = rng.integers(0, 8, n)
  acc = RankingAccumulator()
  for lo in range(0, n, 16):  # last batch padded to 16 rows with weight 0 and NaN
    hi = min(lo + 16, n)
    pad = lambda x: np.r_[x[lo:hi], np.full(16 - (hi - lo), np.nan)]
    acc.add({"click": pad(click), "watch": pad(watch)},
            {"click": pad(p_click), "watch": pad(p_watch)},
            weights=np.r_[np.ones(hi - lo), np.zeros(16 - (hi - lo))],
            groups=np.r_[groups[lo:hi], np.zeros(16 - (hi - lo), int)])
  heads = {"click": "binary", "watch": "regression"}
  out = acc.result(heads, ndcg_k=3, combined={"click": 1.0, "watch": 0.5})
  expected = {**head_metrics("click", click, p_click),
              **head_metrics("watch", watch, p_watch, kind="regression"),
              "num_rows": n,
              "ndcg@3": grouped_ndcg(groups, click + 0.5 * watch, p_click + 0.5 * p_watch, k=3),
              "ndcg_groups": len(np.unique(groups[click > 0]))}
  assert out == pytest.approx(expected)
  assert "ndcg@10" not in acc.result(heads)
  assert acc.result({}, ndcg_k=None, combined="click")["ndcg"] == pytest.approx(
      grouped_ndcg(groups, click, p_click))


def test_accumulator_errors():
  acc = RankingAccumulator()
  acc.add({"click": [1, 0]}, {"click": [0.5, 0.5]})
  with pytest.raises(ValueError, match="heads changed"):
    acc.add({"like": [1]}, {"like": [0.5]})
  with pytest.raises(ValueError, match="group ids"):
    acc.result({"click": "binary"}, combined="click")
  with pytest.raises(ValueError, match="rows"):
    acc.add({"click": [1, 0]}, {"click": [0.5]})


def test_matches_sklearn():
  sk = pytest.importorskip("sklearn.metrics")
  rng = np.random.default_rng(2)
  labels, scores = rng.integers(0, 2, 300), rng.integers(0, 20, 300) / 20
  weights = rng.random(300)
  assert auc(labels, scores, weights) == pytest.approx(
      sk.roc_auc_score(labels, scores, sample_weight=weights))
  probs = np.clip(scores, 0.01, 0.99)
  assert logloss(labels, probs, weights) == pytest.approx(
      sk.log_loss(labels, probs, sample_weight=weights))
