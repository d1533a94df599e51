import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.errors import UserError
from jaxrec.eval.metrics import ranking
from jaxrec.eval.metrics.ranking import MetricAccumulator, draw_negatives

# Jitted once per shape: faster than op-by-op dispatch, and what callers run.
mask_scores = jax.jit(ranking.mask_scores)
topk_metrics = jax.jit(ranking.topk_metrics, static_argnames="ks")
sampled_metrics = jax.jit(ranking.sampled_metrics, static_argnames="ks")

# Ids 0..7; 0 and 1 (padding, OOV) score highest so the tests see that masking removes them.
# Ranking of the real items: 4 (.9), 6 (.7), 3 (.5), 5 (.3), 7 (.2), 2 (.1).
ROW = [9.0, 9.0, 0.1, 0.5, 0.9, 0.3, 0.7, 0.2]


def _close(metrics, expected):
  for name, values in expected.items():
    np.testing.assert_allclose(np.asarray(metrics[name]), values, rtol=1e-6, atol=1e-7,
                               err_msg=name)


def test_topk_metrics_by_hand():
  scores = mask_scores(jnp.array([ROW] * 3), jnp.zeros((3, 1), jnp.int32))
  # Row 0: one target at rank 2. Row 1: targets at ranks 1 and 5. Row 2: no targets.
  targets = jnp.array([[3, 0], [6, 2], [0, 0]])
  m = topk_metrics(scores, targets, ks=(1, 3, 6))
  two_ideal = 1 + 1 / math.log2(3)
  _close(m, {
      "recall@1": [0, 0, 0], "ndcg@1": [0, 0, 0], "mrr@1": [0, 0, 0],
      "recall@3": [1, 0.5, 0],
      "ndcg@3": [1 / math.log2(4), (1 / math.log2(3)) / two_ideal, 0],
      "mrr@3": [1 / 3, 1 / 2, 0],
      "recall@6": [1, 1, 0],
      "ndcg@6": [1 / math.log2(4), (1 / math.log2(3) + 1 / math.log2(7)) / two_ideal, 0],
      "mrr@6": [1 / 3, 1 / 2, 0],
  })
  assert all(v.shape == (3,) for v in m.values())


def test_idcg_counts_at_most_k_ideal_positions():
  # Three targets at ranks 0, 1 and 4; at k=2 the ideal list has only two slots, so NDCG@2 is 1.
  scores = mask_scores(jnp.array([ROW]), jnp.zeros((1, 1), jnp.int32))
  m = topk_metrics(scores, jnp.array([[4, 6, 7]]), ks=(2, 5))
  ideal5 = 1 + 1 / math.log2(3) + 1 / math.log2(4)
  _close(m, {"ndcg@2": [1.0], "recall@2": [2 / 3],
             "ndcg@5": [(1 + 1 / math.log2(3) + 1 / math.log2(6)) / ideal5], "recall@5": [1.0]})


def test_repeated_targets_count_once():
  scores = mask_scores(jnp.array([ROW]), jnp.zeros((1, 1), jnp.int32))
  m = topk_metrics(scores, jnp.array([[3, 3, 0]]), ks=(3,))
  _close(m, {"recall@3": [1.0], "ndcg@3": [1 / math.log2(4)]})


def test_excluding_a_history_item_moves_the_target_up():
  scores = jnp.array([ROW])
  targets = jnp.array([[3]])
  before = topk_metrics(mask_scores(scores, jnp.array([[0, 0]])), targets, ks=(2,))
  after = topk_metrics(mask_scores(scores, jnp.array([[4, 0]])), targets, ks=(2,))
  _close(before, {"recall@2": [0], "ndcg@2": [0], "mrr@2": [0]})
  _close(after, {"recall@2": [1], "ndcg@2": [1 / math.log2(3)], "mrr@2": [1 / 2]})


def test_padding_and_oov_are_never_ranked():
  masked = mask_scores(jnp.array([ROW]), jnp.zeros((1, 1), jnp.int32))
  _, top = jax.lax.top_k(masked, 6)
  assert sorted(np.asarray(top[0]).tolist()) == [2, 3, 4, 5, 6, 7]
  assert np.all(np.isfinite(np.asarray(masked)))
  # An OOV target is a target (it divides recall) but can never be hit, even with k > V.
  m = topk_metrics(masked, jnp.array([[1, 4]]), ks=(20,))
  _close(m, {"recall@20": [0.5], "mrr@20": [1.0]})


def test_excluded_target_is_a_miss_even_when_k_covers_the_catalogue():
  masked = mask_scores(jnp.array([ROW]), jnp.array([[3]]))
  m = topk_metrics(masked, jnp.array([[3]]))  # default ks (10, 20) exceed the 8 ids
  assert all(float(v[0]) == 0 for v in m.values())


@pytest.mark.parametrize("dtype", [jnp.float16, jnp.bfloat16, jnp.float32])
def test_masking_stays_finite_in_low_precision(dtype):
  masked = mask_scores(jnp.array([ROW], dtype), jnp.array([[3]]))
  assert np.all(np.isfinite(np.asarray(masked, np.float32)))
  m = topk_metrics(masked, jnp.array([[3, 4]]), ks=(20,))
  _close(m, {"recall@20": [0.5], "mrr@20": [1.0]})


def test_ties_follow_top_k_order_lower_id_first():
  tied = [0, 0, 0.1, 0.5, 0.9, 0.5, 0.7, 0.2]  # 3 and 5 tie at .5
  scores = mask_scores(jnp.array([tied]), jnp.zeros((1, 1), jnp.int32))
  m = topk_metrics(scores, jnp.array([[3]]), ks=(3,))
  _close(m, {"mrr@3": [1 / 3]})  # 3 ties with 5 and ranks ahead of it
  m = topk_metrics(scores, jnp.array([[5]]), ks=(3,))
  _close(m, {"mrr@3": [0.0]})


def test_jit_matches_eager():
  rng = np.random.default_rng(0)
  scores = jnp.asarray(rng.normal(size=(4, 50)), jnp.float32)
  exclude = jnp.asarray(rng.integers(0, 50, size=(4, 5)))
  targets = jnp.asarray(rng.integers(0, 50, size=(4, 3)))
  eager = ranking.topk_metrics(ranking.mask_scores(scores, exclude), targets)
  jitted = topk_metrics(mask_scores(scores, exclude), targets, ks=(10, 20))
  assert set(eager) == set(jitted) == {f"{m}@{k}" for m in ("recall", "ndcg", "mrr")
                                        for k in (10, 20)}
  for name in eager:
    np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-6)
  eager = ranking.sampled_metrics(scores, targets[:, 0], exclude, ks=(10,))
  jitted = sampled_metrics(scores, targets[:, 0], exclude, ks=(10,))
  for name in eager:
    np.testing.assert_allclose(jitted[name], eager[name], rtol=1e-6)


def test_sampled_metrics_by_hand():
  tied = [9.0, 9.0, 0.1, 0.5, 0.9, 0.5, 0.7, 0.2]  # ROW with 5 tied to 3
  scores = jnp.array([tied] * 3)
  # Row 0: target 3 (.5) against 4 (.9), 6 (.7), 2 (.1), 5 (.5 tie -> counts above), 0 (padding):
  # rank 3. Row 1: target 4 beats every negative: rank 0. Row 2: padding target.
  targets = jnp.array([3, 4, 0])
  negatives = jnp.array([[4, 6, 2, 5, 0], [2, 3, 5, 6, 7], [2, 3, 4, 5, 6]])
  m = sampled_metrics(scores, targets, negatives, ks=(3, 5))
  _close(m, {
      "sampled_recall@3": [0, 1, 0], "sampled_ndcg@3": [0, 1, 0], "sampled_mrr@3": [0, 1, 0],
      "sampled_recall@5": [1, 1, 0], "sampled_ndcg@5": [1 / math.log2(5), 1, 0],
      "sampled_mrr@5": [1 / 4, 1, 0],
  })


def test_sampled_masked_target_is_a_miss():
  scores = mask_scores(jnp.array([ROW]), jnp.array([[3]]))
  m = sampled_metrics(scores, jnp.array([3]), jnp.array([[2]]), ks=(5,))
  assert all(float(v[0]) == 0 for v in m.values())


def _histories(rows, num_items, seed, max_len=60):
  rng = np.random.default_rng(seed)
  return [rng.integers(0, num_items, size=rng.integers(0, max_len)) for _ in range(rows)]


@pytest.mark.parametrize("by", ["uniform", "popularity"])
def test_draw_negatives_are_distinct_allowed_and_deterministic(by):
  num_items, rows, n = 300, 200, 50
  histories = _histories(rows, num_items, seed=1, max_len=200)
  targets = np.random.default_rng(2).integers(2, num_items, size=rows)
  counts = np.random.default_rng(3).integers(0, 50, size=num_items)
  kwargs = {"by": by, "counts": counts if by == "popularity" else None}
  neg = draw_negatives(num_items, histories, targets, n, seed=7, **kwargs)
  assert neg.shape == (rows, n) and neg.dtype == np.int32
  assert neg.min() >= 2 and neg.max() < num_items
  for row, history, target in zip(neg, histories, targets):
    assert len(set(row.tolist())) == n
    assert not set(row.tolist()) & (set(history.tolist()) | {int(target)})
    if by == "popularity":
      assert np.all(counts[row] > 0)
  assert np.array_equal(neg, draw_negatives(num_items, histories, targets, n, seed=7, **kwargs))
  assert not np.array_equal(neg, draw_negatives(num_items, histories, targets, n, seed=8,
                                                **kwargs))


def test_draw_negatives_falls_back_when_the_history_covers_almost_everything():
  # Only id 11 is left for the first row; rejection sampling would rarely find it.
  histories = [np.arange(2, 10), np.array([5])]
  neg = draw_negatives(12, histories, np.array([10, 2]), n=1)
  assert neg[0, 0] == 11
  many = draw_negatives(1000, [np.arange(2, 950)], np.array([999]), n=49)
  assert sorted(many[0].tolist()) == list(range(950, 999))


def test_draw_negatives_multiple_targets_per_row():
  neg = draw_negatives(10, [np.array([2])], np.array([[3, 4, 5]]), n=4)
  assert sorted(neg[0].tolist()) == [6, 7, 8, 9]


def test_uniform_negatives_are_uniform():
  rows, n = 4000, 5
  neg = draw_negatives(22, [np.array([2, 3])] * rows, np.full(rows, 4), n)
  freq = np.bincount(neg.ravel(), minlength=22)[5:]
  expected = rows * n / 17
  assert np.all(np.abs(freq - expected) < 0.15 * expected)


def test_popularity_negatives_favour_frequent_items():
  num_items, rows, n = 1002, 2000, 5
  counts = np.ones(num_items)
  counts[2:12] = 1000  # ten items carry about 91% of the mass
  histories = [np.array([], np.int64)] * rows
  targets = np.full(rows, 500)
  heavy = lambda neg: np.mean((neg >= 2) & (neg < 12))
  assert heavy(draw_negatives(num_items, histories, targets, n, by="popularity",
                              counts=counts)) > 0.6
  assert heavy(draw_negatives(num_items, histories, targets, n)) < 0.05


def test_draw_negatives_is_fast_at_movielens_scale():
  histories = _histories(1000, 1684, seed=0, max_len=300)
  targets = np.random.default_rng(1).integers(2, 1684, size=1000)
  start = time.perf_counter()
  neg = draw_negatives(1684, histories, targets, 100)
  assert time.perf_counter() - start < 1.0
  assert neg.shape == (1000, 100)


def test_draw_negatives_errors():
  histories, targets = [np.array([2, 3])], np.array([4])
  with pytest.raises(UserError, match="uniform"):
    draw_negatives(100, histories, targets, 5, by="zipf")
  with pytest.raises(UserError, match="counts"):
    draw_negatives(100, histories, targets, 5, by="popularity")
  with pytest.raises(UserError, match="fewer negatives"):
    draw_negatives(10, histories, targets, 6)  # 8 items, 3 excluded
  counts = np.zeros(100)
  counts[5:8] = 1
  with pytest.raises(UserError, match="non-zero count"):
    draw_negatives(100, histories, targets, 4, by="popularity", counts=counts)
  with pytest.raises(UserError, match="cover"):
    draw_negatives(100, histories, targets, 4, by="popularity", counts=np.ones(50))


def test_accumulator_ignores_padded_rows():
  acc = MetricAccumulator()
  acc.add({"recall@10": jnp.array([1.0, 0.0, 0.5])}, jnp.array([1, 1, 1]))
  # A padded final batch: the last two rows are filler, with garbage values.
  acc.add({"recall@10": np.array([1.0, 7.0, np.nan])}, np.array([1, 0, 0]))
  result = acc.result()
  assert result["num_users"] == 4
  assert result["recall@10"] == pytest.approx(2.5 / 4)


def test_accumulator_empty_and_mismatched_keys():
  acc = MetricAccumulator()
  assert acc.result() == {"num_users": 0.0}
  acc.add({"a": np.zeros(2)}, np.zeros(2))
  assert math.isnan(acc.result()["a"])
  with pytest.raises(ValueError):
    acc.add({"b": np.zeros(2)}, np.ones(2))
