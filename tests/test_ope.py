import numpy as np
import pytest

from jaxrec.errors import UserError
from jaxrec.eval.offpolicy import estimators


def _hand_log():
  # Weights w = target / propensity = [2, 4, 0, 0.5]; rewards [1, 1, 1, 0].
  log = estimators.BanditLog(context=[0, 1, 2, 3], action=[5, 6, 7, 8], reward=[1.0, 1.0, 1.0, 0.0],
                             propensity=[0.5, 0.25, 0.5, 1.0])
  return log, np.array([1.0, 1.0, 0.0, 0.5])


def test_hand_computed_values():
  log, target = _hand_log()
  assert estimators.ips(log, target).value == pytest.approx(6 / 4)
  assert estimators.clipped_ips(log, target, max_weight=3).value == pytest.approx(5 / 4)
  assert estimators.snips(log, target).value == pytest.approx(6 / 6.5)
  q_logged, q_target = np.full(4, 0.5), np.full(4, 0.6)
  assert estimators.direct_method(q_target).value == pytest.approx(0.6)
  # 0.6 + mean(w * (r - 0.5)) = 0.6 + (1 + 2 + 0 - 0.25) / 4
  dr = estimators.doubly_robust(log, target, q_logged, q_target)
  assert dr.value == pytest.approx(1.2875)


def test_hand_computed_diagnostics():
  log, target = _hand_log()
  d = estimators.ips(log, target).diagnostics
  assert d['effective_sample_size'] == pytest.approx(6.5 ** 2 / (4 + 16 + 0 + 0.25))
  assert d['max_weight'] == 4
  assert d['mean_weight'] == pytest.approx(6.5 / 4)
  assert d['n'] == 4


def test_bootstrap_interval_is_seeded_and_ordered():
  log, target = _hand_log()
  a, b = estimators.ips(log, target, seed=3), estimators.ips(log, target, seed=3)
  assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
  assert a.ci_low <= a.value <= a.ci_high


def test_clipped_weights_never_exceed_max_weight():
  rng = np.random.default_rng(0)
  n = 500
  log = estimators.BanditLog(context=np.arange(n), action=np.zeros(n, int), reward=np.ones(n),
                             propensity=rng.uniform(0.01, 1, n))
  target = rng.uniform(0, 1, n)
  w = estimators.importance_weights(log, target, max_weight=5.0)
  assert w.max() <= 5.0
  est = estimators.clipped_ips(log, target, max_weight=5.0)
  assert est.diagnostics['max_weight'] <= 5.0
  assert est.value <= 5.0 and est.ci_high <= 5.0
  assert 0 < est.diagnostics['clipped_fraction'] < 1


def test_ess_is_n_when_target_equals_logging():
  rng = np.random.default_rng(1)
  n = 200
  p = rng.uniform(0.1, 1, n)
  log = estimators.BanditLog(context=np.arange(n), action=np.zeros(n, int),
                             reward=rng.uniform(size=n), propensity=p)
  d = estimators.ips(log, p).diagnostics
  assert d['effective_sample_size'] == pytest.approx(n)
  assert d['mean_weight'] == pytest.approx(1.0)


def _simulate(seed, n=2000, n_contexts=4, n_arms=5, eps=0.3):
  """Epsilon-greedy logging around arm 0, deterministic target; returns the true target value."""
  world = np.random.default_rng(100)  # the same bandit for every seed; only the logs vary
  p_reward = world.uniform(0.05, 0.95, (n_contexts, n_arms))
  target_arm = (np.arange(n_contexts) + 1) % n_arms
  true_value = p_reward[np.arange(n_contexts), target_arm].mean()
  rng = np.random.default_rng(seed)
  x = rng.integers(0, n_contexts, n)
  explore = rng.random(n) < eps
  a = np.where(explore, rng.integers(0, n_arms, n), 0)
  propensity = np.where(a == 0, 1 - eps + eps / n_arms, eps / n_arms)
  r = (rng.random(n) < p_reward[x, a]).astype(float)
  log = estimators.BanditLog(context=x, action=a, reward=r, propensity=propensity)
  target = (a == target_arm[x]).astype(float)
  # A decent but imperfect reward model: the truth plus fixed noise.
  q = np.clip(p_reward + world.normal(0, 0.05, p_reward.shape), 0, 1)
  return log, target, q[x, a], q[x, target_arm[x]], true_value


def test_ips_interval_covers_true_value():
  # A 95% interval should miss about 2 of 40 logs; 36 leaves room for bootstrap noise.
  covered = 0
  for seed in range(40):
    log, target, _, _, truth = _simulate(seed)
    est = estimators.ips(log, target, n_boot=500, seed=seed)
    covered += est.ci_low <= truth <= est.ci_high
  assert covered >= 36


def test_dr_beats_ips_with_a_decent_reward_model():
  ips_err, dr_err = [], []
  for seed in range(20):
    log, target, q_logged, q_target, truth = _simulate(seed, n=500)
    ips_err.append(abs(estimators.ips(log, target, n_boot=1).value - truth))
    dr = estimators.doubly_robust(log, target, q_logged, q_target, n_boot=1)
    dr_err.append(abs(dr.value - truth))
  assert np.mean(dr_err) < np.mean(ips_err)


def test_estimate_all_and_table():
  log, target = _hand_log()
  out = estimators.estimate_all(log, target, np.full(4, 0.5), np.full(4, 0.6), max_weight=3)
  assert set(out) == {'ips', 'clipped_ips', 'snips', 'dm', 'dr'}
  table = estimators.format_table(out)
  for name in out:
    assert name in table
  assert 'ESS' in table and '95% CI' in table
  assert set(estimators.estimate_all(log, target)) == {'ips', 'clipped_ips', 'snips'}


@pytest.mark.parametrize('field, kwargs', [
    ('propensity', dict(propensity=[0.5, 0.0])),
    ('propensity', dict(propensity=[0.5, 1.5])),
    ('reward', dict(reward=[1.0, np.nan])),
    ('context', dict(context=[0, 1, 2])),
    ('action', dict(action=[0.5, 1.0])),
])
def test_log_validation_names_the_field(field, kwargs):
  args = dict(context=[0, 1], action=[0, 1], reward=[1.0, 0.0], propensity=[0.5, 0.5])
  args.update(kwargs)
  with pytest.raises(UserError, match=field):
    estimators.BanditLog(**args)


def test_argument_validation():
  log, target = _hand_log()
  with pytest.raises(UserError, match='target_probs'):
    estimators.ips(log, target[:3])
  with pytest.raises(UserError, match='target_probs'):
    estimators.ips(log, [1.0, 1.0, 2.0, 0.0])
  with pytest.raises(UserError, match='max_weight'):
    estimators.clipped_ips(log, target, max_weight=0)
  with pytest.raises(UserError, match='reward_model_logged'):
    estimators.doubly_robust(log, target, np.zeros(3), np.zeros(4))
  with pytest.raises(UserError, match='SNIPS'):
    estimators.snips(log, np.zeros(4))
  with pytest.raises(UserError, match='n_boot'):
    estimators.ips(log, target, n_boot=0)
  with pytest.raises(UserError, match='both'):
    estimators.estimate_all(log, target, reward_model_logged=np.zeros(4))
