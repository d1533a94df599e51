import numpy as np
import pytest

from jaxrec.errors import UserError
from jaxrec.eval.offpolicy import estimators, page_world, slate_estimators


def _hand_log():
  # Three slates of two slots. Weights w = target / propensity per slot:
  #   slate 0: [1.0/0.5, 0.5/0.5]  = [2, 1]    rewards [1, 0]  -> sum w r = 2
  #   slate 1: [0.5/0.25, 0.0/0.5] = [2, 0]    rewards [0, 1]  -> 0
  #   slate 2: [1.0/1.0, 0.4/0.8]  = [1, 0.5]  rewards [1, 1]  -> 1.5
  log = slate_estimators.SlateLog(
      context=[0, 1, 2], slate=[[10, 11], [12, 10], [11, 13]],
      reward=[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]],
      propensity=[[0.5, 0.5], [0.25, 0.5], [1.0, 0.8]],
      inclusion_propensity=[[0.5, 0.6], [0.3, 0.5], [1.0, 0.8]],
      prefix_propensity=[[0.5, 0.25], [0.25, 0.1], [1.0, 0.8]])
  target = np.array([[1.0, 0.5], [0.5, 0.0], [1.0, 0.4]])
  return log, target


def test_position_ips_by_hand():
  log, target = _hand_log()
  est = slate_estimators.position_ips(log, target)
  assert est.value == pytest.approx((2 + 0 + 1.5) / 3)
  d = est.diagnostics
  # Slot weights [2, 1, 2, 0, 1, 0.5]: sum 6.5, sum of squares 10.25.
  assert d['effective_sample_size'] == pytest.approx(6.5 ** 2 / 10.25)
  assert d['max_weight'] == 2 and d['mean_weight'] == pytest.approx(6.5 / 6)
  assert d['n'] == 6 and d['slates'] == 3


def test_pseudo_inverse_by_hand():
  log, target = _hand_log()
  # PI weight = sum_j w_j - L + 1 = [3 - 1, 2 - 1, 1.5 - 1] = [2, 1, 0.5]; slate rewards [1, 1, 2].
  np.testing.assert_allclose(slate_estimators.pseudo_inverse_weights(log, target), [2, 1, 0.5])
  est = slate_estimators.pseudo_inverse(log, target)
  assert est.value == pytest.approx((2 * 1 + 1 * 1 + 0.5 * 2) / 3)
  assert est.diagnostics['slates'] == 3 and est.diagnostics['n'] == 3
  assert est.diagnostics['mean_weight'] == pytest.approx(3.5 / 3)
  # Only the slate total is read: a total given directly replaces the per-slot sum.
  assert slate_estimators.pseudo_inverse(log, target, [0, 0, 4]).value == pytest.approx(0.5 * 4 / 3)


def test_topk_ips_by_hand():
  log, _ = _hand_log()
  rankings = [[10, 99], [10, 12], [13, 11]]
  # k = 1: slate 0 shows the target's top item 10 in slot 0 -> 1/0.5 * 1 = 2; slate 1 shows 10 in
  # slot 1 -> 1/0.5 * 1 = 2; slate 2 shows 13 in slot 1 -> 1/0.8 * 1 = 1.25.
  top1 = slate_estimators.topk_membership(log, rankings, 1)
  np.testing.assert_array_equal(top1, [[1, 0], [0, 1], [0, 1]])
  assert slate_estimators.topk_ips(log, top1).value == pytest.approx((2 + 2 + 1.25) / 3)
  # k = 2 adds slate 1's 12 (reward 0) and slate 2's 11 (1/1.0 * 1): (2 + 2 + 2.25) / 3.
  top2 = slate_estimators.topk_membership(log, rankings, 2)
  assert slate_estimators.topk_ips(log, top2).value == pytest.approx(6.25 / 3)


def test_cascade_ips_by_hand():
  log, _ = _hand_log()
  # Target rankings agree with the logged slates down to slot: slate 0 [10, 11] both, slate 1
  # [12, 10] both, slate 2 [11, 99] the first only. Weights 1 / prefix propensity:
  #   slate 0: [1/0.5, 1/0.25] = [2, 4]   rewards [1, 0] -> 2
  #   slate 1: [1/0.25, 1/0.1] = [4, 10]  rewards [0, 1] -> 10
  #   slate 2: [1/1.0, 0]                 rewards [1, 1] -> 1
  match = slate_estimators.prefix_match(log, [[10, 11], [12, 10], [11, 99]])
  np.testing.assert_array_equal(match, [[1, 1], [1, 1], [1, 0]])
  assert slate_estimators.cascade_ips(log, match).value == pytest.approx(13 / 3)
  # Top-1 only: slot 0 rewards 2 + 0 + 1.
  assert slate_estimators.cascade_ips(log, match, k=1).value == pytest.approx(1.0)
  np.testing.assert_allclose(slate_estimators.prefix_from_conditional([[0.5, 0.5, 0.2]]),
                             [[0.5, 0.25, 0.05]])


def test_estimate_all_fits_format_table():
  log, target = _hand_log()
  out = slate_estimators.estimate_all(log, target,
                                      slate_estimators.topk_membership(log, [[10, 99]] * 3, 1),
                                      slate_estimators.prefix_match(log, [[10, 11]] * 3))
  assert set(out) == {'position_ips', 'pseudo_inv', 'topk_ips', 'cascade_ips'}
  table = estimators.format_table(out)
  for name in out:
    assert name in table
  assert set(slate_estimators.estimate_all(log, target)) == {'position_ips', 'pseudo_inv'}
  with pytest.raises(UserError, match='at least one'):
    slate_estimators.estimate_all(log)


def test_bootstrap_resamples_whole_slates():
  # Every slot of a slate gets the slate's reward: the slots are perfectly correlated, so the
  # interval must be about as wide as one from n slates (a row bootstrap over n * L rows would be
  # sqrt(L) narrower).
  rng = np.random.default_rng(0)
  n, length = 400, 4
  r = np.repeat(rng.random(n)[:, None] < 0.3, length, axis=1).astype(float)
  log = slate_estimators.SlateLog(context=np.arange(n), slate=np.tile(np.arange(length), (n, 1)),
                                  reward=r, propensity=np.full((n, length), 0.5))
  target = np.full((n, length), 0.5)
  clustered = slate_estimators.position_ips(log, target)
  rows = estimators.ips(log.to_bandit_log(), target.ravel())
  clustered_width = clustered.ci_high - clustered.ci_low
  row_width = (rows.ci_high - rows.ci_low) * length    # rows estimate the per-slot mean
  assert clustered_width > 1.6 * row_width
  # The slate estimate's spread matches a binomial over n slates.
  se = length * np.sqrt(0.3 * 0.7 / n)
  assert clustered_width == pytest.approx(2 * 1.96 * se, rel=0.2)


# A page of rows, each filled independently by the logger from its own pool, so PI applies;
# the target's rows are correlated (see page_world.py).
WORLD = page_world.PageWorld.make()
L = WORLD.logger.shape[1]


def _simulate_slates(seed, n, spillover):
  log, target_probs, _, _ = WORLD.sample(n, seed, spillover)
  return log, target_probs, WORLD.truth(spillover)


def test_position_ips_and_pi_cover_the_truth_when_items_are_independent():
  covered = {'position_ips': 0, 'pseudo_inv': 0}
  errors = {name: [] for name in covered}
  for seed in range(20):
    log, target, truth = _simulate_slates(seed, 2000, spillover=False)
    for name, est in slate_estimators.estimate_all(log, target, n_boot=400, seed=seed).items():
      covered[name] += est.ci_low <= truth <= est.ci_high
      errors[name].append(est.value - truth)
  for name in covered:
    assert covered[name] >= 17, (name, covered)                            # 95% of 20 is 19
    assert abs(np.mean(errors[name])) < 0.02, (name, np.mean(errors[name]))


def test_pi_stays_unbiased_under_spillover_where_per_slot_ips_does_not():
  pi, per_slot, whole, covered = [], [], [], 0
  truth = WORLD.truth(spillover=True)
  for seed in range(20):
    log, target, page_target, page_logger = WORLD.sample(2000, seed, spillover=True)
    # Whole-page IPS is unbiased under any reward but weighs pages, not rows: far noisier.
    pages = estimators.BanditLog(context=log.context, action=np.arange(len(log)),
                                 reward=log.reward.sum(1), propensity=page_logger)
    whole.append(estimators.ips(pages, page_target, n_boot=1).value - truth)
    est = slate_estimators.pseudo_inverse(log, target, n_boot=400, seed=seed)
    covered += est.ci_low <= truth <= est.ci_high
    pi.append(est.value - truth)
    # Naive: each slot a single bandit decision (estimators.ips on the flattened rows), times L
    # slots.
    naive = estimators.ips(log.to_bandit_log(), target.ravel(), n_boot=1).value * L
    assert naive == pytest.approx(slate_estimators.position_ips(log, target, n_boot=1).value)
    per_slot.append(naive - truth)
  assert covered >= 17
  pi_bias, naive_bias = np.mean(pi), np.mean(per_slot)
  naive_se = np.std(per_slot) / np.sqrt(len(per_slot))
  assert abs(pi_bias) < 0.02
  assert np.std(whole) > 1.5 * np.std(pi)
  # Slot 0 is credited with clicks that the logger's (not the target's) slot-1 items drew.
  assert naive_bias < -5 * naive_se and naive_bias < -0.05


def test_topk_ips_covers_the_truth_of_a_deterministic_top_k():
  # Logger: 3 of 8 items uniformly without replacement (inclusion 3/8, slot marginal 1/8); the
  # reward of a shown item does not depend on its slot. Target: the top 2 of fixed scores.
  world = np.random.default_rng(3)
  items, length, k, contexts = 8, 3, 2, 4
  click = world.uniform(0.05, 0.7, (contexts, items))
  ranking = np.argsort(-world.normal(size=(contexts, items)), axis=1)
  truth = np.take_along_axis(click, ranking[:, :k], 1).sum(1).mean()
  covered, errors = 0, []
  for seed in range(20):
    rng = np.random.default_rng(seed)
    n = 2000
    x = rng.integers(0, contexts, n)
    slate = np.argsort(rng.random((n, items)), axis=1)[:, :length]
    reward = (rng.random((n, length)) < click[x[:, None], slate]).astype(float)
    log = slate_estimators.SlateLog(context=x, slate=slate, reward=reward,
                                    propensity=np.full((n, length), 1 / items),
                                    inclusion_propensity=np.full((n, length), length / items))
    est = slate_estimators.topk_ips(log, slate_estimators.topk_membership(log, ranking[x], k),
                                    n_boot=400, seed=seed)
    covered += est.ci_low <= truth <= est.ci_high
    errors.append(est.value - truth)
  assert covered >= 17
  assert abs(np.mean(errors)) < 0.02


def test_cascade_ips_covers_the_truth_under_a_plackett_luce_logger():
  # Target: a fixed ranking by scores. Logger: Plackett-Luce draws of 3 of 5 items, exploring
  # around those scores (softmax of noisy scores), logging each slot's probability given the
  # items above. Reward: a user reading top-down clicks slot j with a probability that decays
  # with j and halves when an item of the same group was shown above (so it depends on the
  # prefix, which the cascade assumption allows).
  world = np.random.default_rng(11)
  items, length, contexts = 5, 3, 3
  scores = world.normal(0, 1, (contexts, items))
  ranking = np.argsort(-scores, axis=1)
  logits = 1.5 * scores + world.normal(0, 0.5, scores.shape)
  base = world.uniform(0.2, 0.8, (contexts, items))
  group = np.array([0, 0, 1, 1, 2])
  examine = np.array([1.0, 0.7, 0.5])

  def click_prob(x, slates):                                       # [n], [n, L] -> [n, L]
    repeat = np.zeros(slates.shape, bool)
    for j in range(1, length):
      repeat[:, j] = (group[slates[:, :j]] == group[slates[:, j:j + 1]]).any(axis=1)
    return base[x[:, None], slates] * examine * np.where(repeat, 0.5, 1.0)

  all_x = np.arange(contexts)
  truth = click_prob(all_x, ranking[:, :length]).sum(1).mean()
  covered, errors = 0, []
  for seed in range(20):
    rng = np.random.default_rng(seed)
    n = 3000
    x = rng.integers(0, contexts, n)
    # Gumbel-top-k is a Plackett-Luce draw; the conditionals follow from the remaining mass.
    slate = np.argsort(-(logits[x] + rng.gumbel(size=(n, items))), axis=1)[:, :length]
    weights = np.exp(logits[x])
    chosen = np.take_along_axis(weights, slate, 1)
    remaining = weights.sum(1, keepdims=True) - np.concatenate(
        [np.zeros((n, 1)), np.cumsum(chosen, 1)[:, :-1]], axis=1)
    reward = (rng.random((n, length)) < click_prob(x, slate)).astype(float)
    prefix = slate_estimators.prefix_from_conditional(chosen / remaining)
    log = slate_estimators.SlateLog(context=x, slate=slate, reward=reward, prefix_propensity=prefix)
    est = slate_estimators.cascade_ips(log, slate_estimators.prefix_match(log, ranking[x]),
                                       n_boot=400, seed=seed)
    covered += est.ci_low <= truth <= est.ci_high
    errors.append(est.value - truth)
  assert covered >= 17
  assert abs(np.mean(errors)) < 0.02


def _args(**changes):
  args = dict(context=[0, 1], slate=[[1, 2], [3, 4]], reward=[[1.0, 0.0], [0.0, 0.0]],
              propensity=[[0.5, 0.5], [0.5, 0.5]])
  args.update(changes)
  return args


@pytest.mark.parametrize('changes, match', [
    (dict(propensity=[[0.5, 0.0], [0.5, 0.5]]), r'propensity\[0, 1\].*outside \(0, 1\]'),
    (dict(propensity=[[0.5, 0.5], [1.5, 0.5]]), r'propensity\[1, 0\].*outside'),
    (dict(inclusion_propensity=[[0.5, 0.5], [0.5, -1]]), 'inclusion_propensity'),
    (dict(slate=[[1, 2], [3, 4, 5]]), 'ragged: slate 1 has 3 slots but slate 0 has 2'),
    (dict(reward=[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]), 'reward has 3 slots per slate'),
    (dict(context=[0, 1, 2]), 'slate has 2 slates but context has 3'),
    (dict(reward=[[1.0, np.nan], [0.0, 0.0]]), r'reward\[0, 1\].*not finite'),
    (dict(slate=[[1.5, 2], [3, 4]]), 'integer item ids'),
    (dict(context=[]), 'empty'),
    (dict(propensity=None), 'needs the logging policy'),
])
def test_log_validation(changes, match):
  with pytest.raises(UserError, match=match):
    slate_estimators.SlateLog(**_args(**changes))


def test_argument_validation():
  log = slate_estimators.SlateLog(**_args())
  with pytest.raises(UserError, match='target_probs has shape'):
    slate_estimators.position_ips(log, [0.5, 0.5])
  with pytest.raises(UserError, match='outside'):
    slate_estimators.pseudo_inverse(log, [[0.5, 2.0], [0.5, 0.5]])
  with pytest.raises(UserError, match='needs SlateLog.inclusion_propensity'):
    slate_estimators.topk_ips(log, np.ones((2, 2)))
  with pytest.raises(UserError, match='needs SlateLog.prefix_propensity'):
    slate_estimators.cascade_ips(log, np.ones((2, 2)))
  only_prefix = slate_estimators.SlateLog(**_args(propensity=None,
                                                  prefix_propensity=np.ones((2, 2))))
  with pytest.raises(UserError, match='needs SlateLog.propensity'):
    slate_estimators.position_ips(only_prefix, np.ones((2, 2)))
  with pytest.raises(UserError, match='k = 3'):
    slate_estimators.topk_membership(log, [[1, 2], [3, 4]], 3)
