"""Re-ranking: MMR, rules and caps, freshness and exploration slots, posteriors, the pipeline."""

import threading

import numpy as np
import pytest

from jaxrec.errors import UserError
from jaxrec.rerank.config import RerankConfig
from jaxrec.rerank.exploration import BetaPosteriors, explore
from jaxrec.rerank.freshness import freshness_slots
from jaxrec.rerank.mmr import mmr, mmr_select
from jaxrec.rerank.pipeline import rerank
from jaxrec.rerank.rules import GroupCaps, allowed, cap_groups
from jaxrec.rerank.slots import pin, pushed_off


def _request(n=200, d=16, seed=0):
  rng = np.random.default_rng(seed)
  candidates = rng.choice(10 * n, n, replace=False)
  scores = rng.standard_normal(n).astype(np.float32)
  vectors = rng.standard_normal((n, d)).astype(np.float32)
  return candidates, scores, vectors


# A hand-made request: 0 and 1 are near-duplicates with the best scores, 2 is as relevant as
# 3 but points elsewhere, 3 nearly duplicates 0.
HAND_SCORES = np.array([0.9, 0.88, 0.6, 0.6])
HAND_VECTORS = np.array([[1, 0, 0], [0.99, 0.1, 0], [0, 0, 1], [0.98, 0, 0.05]], np.float32)


def test_mmr_with_lambda_one_is_score_order():
  _, scores, vectors = _request()
  scores[10] = scores[11]  # a tie: the lower index comes first, as in a stable sort
  np.testing.assert_array_equal(mmr(scores, vectors, 50, 1.0),
                                np.argsort(-scores, kind="stable")[:50])


def test_mmr_replaces_a_near_duplicate_with_a_dissimilar_item():
  np.testing.assert_array_equal(mmr(HAND_SCORES, HAND_VECTORS, 2, 1.0), [0, 1])
  np.testing.assert_array_equal(mmr(HAND_SCORES, HAND_VECTORS, 2, 0.3), [0, 2])
  picked, reordered = mmr_select(HAND_SCORES, HAND_VECTORS, 3, 0.3)
  np.testing.assert_array_equal(picked, [0, 2, 1])
  np.testing.assert_array_equal(reordered, [False, True, False])


def test_mmr_matches_the_formula_applied_directly():
  _, scores, vectors = _request(n=60)
  unit = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)
  relevance = (scores - scores.min()) / (scores.max() - scores.min())
  for lam in (0.0, 0.4, 0.9):
    picked = [int(np.argmax(scores))]
    while len(picked) < 15:
      gain = [-np.inf if i in picked else
              lam * relevance[i] - (1 - lam) * max(unit[i] @ unit[j] for j in picked)
              for i in range(60)]
      picked.append(int(np.argmax(gain)))
    np.testing.assert_array_equal(mmr(scores, vectors, 15, lam), picked)


def test_mmr_relevance_is_scale_free():
  _, scores, vectors = _request()
  np.testing.assert_array_equal(mmr(scores, vectors, 20, 0.5),
                                mmr(scores * 1000 - 7, vectors * 3, 20, 0.5))


def test_mmr_mask_and_short_lists():
  _, scores, vectors = _request(n=30)
  mask = np.zeros(30, bool)
  mask[[3, 7, 9]] = True
  picked = mmr(scores, vectors, 10, 0.7, mask=mask)
  assert sorted(picked) == [3, 7, 9]
  with pytest.raises(UserError, match="vectors has shape"):
    mmr(scores, vectors[:5], 10, 0.7)
  with pytest.raises(UserError, match="lam"):
    mmr(scores, vectors, 10, 1.5)


def test_allowed_drops_blocked_and_excluded_ids():
  ok = allowed(np.array([5, 9, 2, 7]), blocked=[9, 100], exclude=np.array([7]))
  np.testing.assert_array_equal(ok, [True, False, True, False])


def test_cap_groups_is_greedy_in_order():
  order = np.array([4, 0, 3, 1, 2, 5])
  groups = np.array(["a", "b", "a", "a", "a", "b"])  # per candidate index
  np.testing.assert_array_equal(cap_groups(order, groups, 2), [4, 0, 1, 5])


def test_mmr_with_caps_matches_capping_the_score_order():
  _, scores, vectors = _request()
  groups = np.random.default_rng(1).integers(0, 5, len(scores))
  picked, _ = mmr_select(scores, vectors, 12, 1.0, caps=GroupCaps(groups, 2))
  np.testing.assert_array_equal(picked, cap_groups(np.argsort(-scores, kind="stable"), groups, 2))
  diverse, _ = mmr_select(scores, vectors, 12, 0.5, caps=GroupCaps(groups, 2))
  assert np.bincount(groups[diverse]).max() <= 2 and len(diverse) == 10


def test_pin_keeps_pinned_items_and_moves_on_from_taken_positions():
  items, held = pin([10, 11, 12, 13], [False, True, False, False], [20, 21], [1, 0], 4)
  np.testing.assert_array_equal(items, [21, 11, 20, 10])
  np.testing.assert_array_equal(held, [True, True, True, False])
  items, _ = pin([10, 11], [False, False], [20], [8], 5)  # past the end of a short list
  np.testing.assert_array_equal(items, [10, 11, 20])


def test_pushed_off_takes_the_last_unpinned_items():
  np.testing.assert_array_equal(pushed_off([1, 2, 3, 4], [False, False, True, False], 4, 3),
                                [4, 2, 1])
  np.testing.assert_array_equal(pushed_off([1, 2], [False, False], 3, 3), [-1, 2, 1])


def test_freshness_keeps_to_group_caps_counting_the_item_pushed_off():
  groups = np.array([0, 0, 1, 1, 0, 2])
  ages = np.array([1e6, 1e6, 1e6, 1e6, 0.0, 0.0])
  scores = np.array([6, 5, 4, 3, 2, 1.0])
  caps = GroupCaps(groups, 2)
  for index in range(4):
    caps.take(index)
  items, _ = freshness_slots(np.arange(4), ages, scores, 60, 1, [1], caps=caps)
  np.testing.assert_array_equal(items, [0, 5, 1, 2])  # 4 would make three of group 0
  groups[4] = 1  # now 4 takes the place of 3, its own group's
  caps = GroupCaps(groups, 2)
  for index in range(4):
    caps.take(index)
  items, _ = freshness_slots(np.arange(4), ages, scores, 60, 1, [1], caps=caps)
  np.testing.assert_array_equal(items, [0, 4, 1, 2])
  np.testing.assert_array_equal(caps.counts, [2, 2, 0])


def test_freshness_places_the_best_fresh_items_at_the_positions():
  ranked = np.arange(10)
  ages = np.full(15, 1e6)
  ages[[11, 12, 14]] = 10.0
  scores = np.arange(15, 0, -1.0)  # 11 outscores 12 outscores 14
  items, placed = freshness_slots(ranked, ages, scores, 3600, 2, [3, 8])
  assert len(items) == 10 and items[3] == 11 and items[8] == 12
  np.testing.assert_array_equal(np.flatnonzero(placed), [3, 8])
  np.testing.assert_array_equal(np.delete(items, [3, 8]), np.arange(8))
  # A fresh item the ranking already shows early counts towards the first slot.
  ages[1] = 0.0
  items, placed = freshness_slots(ranked, ages, scores, 3600, 2, [3, 8])
  assert items[1] == 1 and items[8] == 11 and placed.sum() == 1
  # No fresh candidate: the list is unchanged.
  items, placed = freshness_slots(ranked, np.full(15, 1e6), scores, 3600, 2, [3, 8])
  np.testing.assert_array_equal(items, ranked)
  assert not placed.any()


def test_posteriors_count_feedback_and_round_trip():
  posteriors = BetaPosteriors(10, alpha0=2.0, beta0=3.0)
  posteriors.update(np.array([1, 4, 1]), np.array([5, 2, 3]), np.array([1, 0, 2]))
  np.testing.assert_array_equal(posteriors.impressions([1, 4, 0]), [8, 2, 0])
  np.testing.assert_array_equal(posteriors.engagements([1, 4, 0]), [3, 0, 0])
  with pytest.raises(UserError, match="engagements <= impressions"):
    posteriors.update([2], [1], [2])
  with pytest.raises(UserError, match="grow"):
    posteriors.impressions([10])
  posteriors.grow(12)
  assert posteriors.impressions([11])[0] == 0
  restored = BetaPosteriors.from_state_dict(posteriors.state_dict())
  assert (restored.alpha0, restored.beta0, restored.num_items) == (2.0, 3.0, 12)
  np.testing.assert_array_equal(restored.impressions(np.arange(12)),
                                posteriors.impressions(np.arange(12)))
  draws = restored.sample(np.array([1, 4]), np.random.default_rng(0), draws=20000)
  np.testing.assert_allclose(draws.mean(0), [5 / 13, 2 / 7], atol=0.01)  # Beta(5, 8), Beta(2, 5)


def test_posteriors_saturate_instead_of_overflowing():
  from jaxrec.rerank.posteriors import MAX_COUNT, MAX_INCREMENT
  posteriors = BetaPosteriors(3)
  with pytest.raises(UserError, match="at most"):
    posteriors.update([1], [MAX_INCREMENT + 1], [0])
  with pytest.raises(UserError, match="integer"):
    posteriors.update([1], [2**70], [0])
  posteriors._impressions[1] = MAX_COUNT - 5  # as if after years of feedback
  posteriors._engagements[1] = MAX_COUNT - 10
  posteriors.update([1] * 1000, [MAX_INCREMENT] * 1000, [MAX_INCREMENT] * 1000)
  assert posteriors.impressions([1])[0] == posteriors.engagements([1])[0] == MAX_COUNT
  draws = posteriors.sample(np.array([0, 1, 2]), np.random.default_rng(0), draws=10)
  assert np.isfinite(draws).all() and (draws >= 0).all() and (draws <= 1).all()


def test_posteriors_updates_from_threads_all_count():
  posteriors = BetaPosteriors(50)

  def feedback(seed):
    rng = np.random.default_rng(seed)
    for _ in range(200):
      posteriors.update(rng.integers(0, 50, 8), np.full(8, 2), np.ones(8, np.int64))
      posteriors.sample(np.arange(50), rng)

  threads = [threading.Thread(target=feedback, args=(seed,)) for seed in range(8)]
  for thread in threads:
    thread.start()
  for thread in threads:
    thread.join()
  assert posteriors.impressions(np.arange(50)).sum() == 8 * 200 * 8 * 2
  assert posteriors.engagements(np.arange(50)).sum() == 8 * 200 * 8


def test_explore_skips_well_known_items_and_reports_propensities():
  posteriors = BetaPosteriors(6)
  posteriors.update(np.arange(6), np.array([1000, 1000, 3, 0, 5, 2]),
                    np.array([900, 900, 3, 0, 0, 0]))
  candidates = np.arange(6)
  scores = np.zeros(6)
  rng = np.random.default_rng(0)
  seen = set()
  for _ in range(50):
    result = explore(candidates, scores, posteriors, rng, max_impressions=10, slots=2)
    assert len(result.chosen) == 2 and set(result.chosen) <= {2, 3, 4, 5}
    assert ((result.propensity > 0) & (result.propensity <= 1)).all()
    seen.update(result.chosen)
  assert seen == {2, 3, 4, 5}
  # Three of three engagements draw high far more often than none of five.
  result = explore(candidates, scores, posteriors, rng, 10, 1, draws=2000)
  assert result.chosen[0] == 2 and result.propensity[0] > 0.5
  # Excluded by the mask, or no slots: nothing to explore.
  mask = np.array([True, True, False, False, False, False])
  assert not len(explore(candidates, scores, posteriors, rng, 10, 2, mask=mask).chosen)


def test_config_validation_names_the_field():
  for field, value in [("mmr_lambda", 1.5), ("group_cap", 0), ("freshness_slots", -1),
                       ("explore_draws", 0), ("freshness_max_age_s", float("nan"))]:
    with pytest.raises(UserError, match=f"RerankConfig.{field}="):
      RerankConfig(**{field: value})
  with pytest.raises(UserError, match="freshness_positions.*one position per slot"):
    RerankConfig(freshness_slots=3, freshness_positions=[1, 2])
  with pytest.raises(UserError, match="explore_positions.*apart from freshness"):
    RerankConfig(freshness_slots=1, freshness_positions=[3], explore_slots=1,
                 explore_positions=[3])
  assert RerankConfig(freshness_positions=[2, 4]).freshness_positions == (2, 4)


def test_rerank_requires_the_inputs_its_config_uses():
  candidates, scores, vectors = _request()
  with pytest.raises(UserError, match="group_cap=2 needs groups="):
    rerank(candidates, scores, vectors, 10, RerankConfig(group_cap=2))
  with pytest.raises(UserError, match="needs posteriors="):
    rerank(candidates, scores, vectors, 10, RerankConfig(explore_slots=1))


def test_rerank_in_score_order_is_all_ranking():
  candidates, scores, vectors = _request()
  result = rerank(candidates, scores, vectors, 10, RerankConfig(mmr_lambda=1.0))
  np.testing.assert_array_equal(result.items, candidates[np.argsort(-scores)[:10]])
  assert (result.stage == "ranking").all() and (result.propensity == 1).all()


def test_rerank_runs_every_stage_within_the_rules():
  candidates, scores, vectors = _request(n=300)
  rng = np.random.default_rng(3)
  groups = rng.integers(0, 6, 300)
  ages = np.full(300, 1e7)
  ages[rng.choice(300, 10, replace=False)] = 60.0
  new = rng.choice(300, 20, replace=False)  # the only candidates with few impressions
  # The five best, the best fresh and a new item never show.
  blocked = np.r_[candidates[np.argsort(-scores)[:5]],
                  candidates[np.argmax(np.where(ages < 100, scores, -np.inf))], candidates[new[0]]]
  shown, engaged = np.full(300, 1000), np.full(300, 100)
  shown[new], engaged[new] = 1, 0
  posteriors = BetaPosteriors(3000)
  posteriors.update(candidates, shown, engaged)
  config = RerankConfig(mmr_lambda=0.6, group_cap=3, freshness_slots=2,
                        freshness_positions=(2, 6), explore_slots=2, explore_positions=(4, 9),
                        explore_max_impressions=10)
  result = rerank(candidates, scores, vectors, 15, config, groups=groups, ages=ages,
                  blocked=blocked, exclude=candidates[:3], posteriors=posteriors, rng=rng)
  assert len(result.items) == 15 and len(set(result.items)) == 15
  assert not set(result.items) & (set(blocked) | set(candidates[:3]))
  np.testing.assert_array_equal(candidates[result.indices], result.items)
  assert np.bincount(groups[result.indices]).max() <= 3
  assert set(result.stage) == {"ranking", "mmr", "freshness", "exploration"}
  assert list(np.flatnonzero(result.stage == "exploration")) == [4, 9]
  assert set(result.indices[result.stage == "exploration"]) <= set(new)
  fresh = ages[result.indices] <= config.freshness_max_age_s
  assert fresh[:3].sum() >= 1 and fresh[:7].sum() >= 2
  explored = result.stage == "exploration"
  assert (result.propensity[~explored] == 1).all()
  assert ((result.propensity[explored] > 0) & (result.propensity[explored] <= 1)).all()


def test_rerank_with_fewer_candidates_than_k():
  candidates, scores, vectors = _request(n=6)
  ages = np.array([0.0, 1e9, 1e9, 1e9, 1e9, 0.0])
  config = RerankConfig(freshness_slots=1, freshness_positions=(8,))
  result = rerank(candidates, scores, vectors, 10, config, ages=ages, blocked=candidates[:2])
  assert sorted(result.indices) == [2, 3, 4, 5]
  assert set(result.stage) <= {"ranking", "mmr"}  # fresh 5 is already shown: nothing to add
