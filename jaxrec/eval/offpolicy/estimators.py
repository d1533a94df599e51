"""Off-policy (counterfactual) estimates of a target policy's value from logged bandit feedback.

The log records, per decision i, the context, the action shown, its reward and the logging
policy's probability of that action (the propensity). The target policy is given on the logged
rows only: `target_probs[i] = pi(a_i | x_i)`, so importance weights are `w = target_probs /
propensity`. DM and DR also take a reward model on those rows: `reward_model_logged[i] =
q(x_i, a_i)` and `reward_model_target[i] = E_{a ~ pi(.|x_i)} q(x_i, a)`.

Estimators (V = mean over logged rows):
  * IPS          mean(w r)                         unbiased under positivity, high variance.
  * clipped IPS  mean(min(w, M) r)                 bounded variance, biased down.
  * SNIPS        sum(w r) / sum(w)                 consistent, far less variance than IPS.
  * DM           mean(reward_model_target)         no variance from weights, as biased as q.
  * DR           mean(q_target + w (r - q_logged)) unbiased if either w or q is right.
The chapter in shared/reference writes DR's first term as q(x_i, a_i); for a target policy
that differs from the logging one it must be q's expectation under the target, as here.

Every estimate comes with a percentile bootstrap interval over logged rows and the overlap
diagnostics (effective sample size, max and mean weight): an estimate from a log where a handful of
rows carry all the weight is not worth reading, and the table makes that visible.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from jaxrec.errors import UserError

# Bootstrap index matrices are drawn in chunks of about this many entries so memory stays bounded
# for large logs (1000 resamples of a million rows would be 8 GB at once).
_CHUNK_ENTRIES = 1 << 22


@dataclasses.dataclass
class BanditLog:
  """Logged decisions; every field is a length-n array.

  `slot` (position in a ranked list) is validated and kept for slate estimators; the estimators
  here treat each row as a single decision.
  """
  context: np.ndarray
  action: np.ndarray
  reward: np.ndarray
  propensity: np.ndarray
  slot: np.ndarray | None = None

  def __post_init__(self):
    self.context = _int_array(self.context, 'context')
    self.action = _int_array(self.action, 'action')
    self.reward = _float_array(self.reward, 'reward')
    self.propensity = _float_array(self.propensity, 'propensity')
    if self.slot is not None:
      self.slot = _int_array(self.slot, 'slot')
    n = len(self.action)
    if n == 0:
      raise UserError('BanditLog is empty: pass at least one logged decision.')
    for name in ('context', 'reward', 'propensity', 'slot'):
      value = getattr(self, name)
      if value is not None and len(value) != n:
        raise UserError(
            f'BanditLog.{name} has {len(value)} entries but action has {n}; every field needs '
            'one entry per logged decision.')
    bad = ~((self.propensity > 0) & (self.propensity <= 1))
    if bad.any():
      i = int(np.argmax(bad))
      raise UserError(
          f'BanditLog.propensity[{i}] = {self.propensity[i]!r} is outside (0, 1]; log the logging '
          "policy's probability of the shown action (a zero propensity means the row could not "
          'have been logged).')

  def __len__(self):
    return len(self.action)


@dataclasses.dataclass(frozen=True)
class Estimate:
  """A policy value with its bootstrap interval and overlap diagnostics."""
  value: float
  ci_low: float
  ci_high: float
  diagnostics: dict


def _int_array(x, name, owner='BanditLog'):
  a = np.asarray(x)
  if a.ndim != 1:
    raise UserError(f'{owner}.{name} must be one-dimensional, got shape {a.shape}.')
  if a.size and not np.issubdtype(a.dtype, np.integer):
    raise UserError(f'{owner}.{name} must hold integer ids, got dtype {a.dtype}.')
  return a.astype(np.int64)


def _float_array(x, name, n=None):
  a = np.asarray(x, dtype=np.float64)
  if a.ndim != 1:
    raise UserError(f'{name} must be one-dimensional, got shape {a.shape}.')
  if n is not None and len(a) != n:
    raise UserError(f'{name} has {len(a)} entries but the log has {n}; pass one per logged row.')
  if not np.isfinite(a).all():
    i = int(np.argmax(~np.isfinite(a)))
    raise UserError(f'{name}[{i}] = {a[i]!r} is not finite; drop or repair that row.')
  return a


def _target(log, target_probs):
  p = _float_array(target_probs, 'target_probs', len(log))
  bad = (p < 0) | (p > 1)
  if bad.any():
    i = int(np.argmax(bad))
    raise UserError(
        f'target_probs[{i}] = {p[i]!r} is outside [0, 1]; pass the probability that the target '
        'policy takes the logged action in the logged context.')
  return p


def importance_weights(log, target_probs, max_weight=None):
  """Per-row `pi(a|x) / pi_0(a|x)`, clipped at `max_weight` when given."""
  w = _target(log, target_probs) / log.propensity
  if max_weight is not None:
    if not max_weight > 0:
      raise UserError(f'max_weight = {max_weight!r} must be positive (typical values: 10 to 100).')
    w = np.minimum(w, max_weight)
  return w


def weight_diagnostics(w):
  total, sq = float(w.sum()), float((w * w).sum())
  return {
      # Kish's effective sample size: n when all weights are equal, ~1 when one row dominates.
      'effective_sample_size': total * total / sq if sq > 0 else 0.0,
      'max_weight': float(w.max()),
      # About 1 when the logging policy covers the target's actions; far below 1 means the
      # target often picks actions the logger never showed.
      'mean_weight': float(w.mean()),
      'n': int(len(w)),
  }


def _bootstrap(num, den, n_boot, seed, level):
  """Percentile interval of sum(num[idx]) / sum(den[idx]) over row resamples (den=None: mean)."""
  if not (isinstance(n_boot, (int, np.integer)) and n_boot >= 1):
    raise UserError(f'n_boot = {n_boot!r} must be a positive integer (1000 is usual).')
  if not 0 < level < 1:
    raise UserError(f'level = {level!r} must be in (0, 1), e.g. 0.95 for a 95% interval.')
  n = len(num)
  rng = np.random.default_rng(seed)
  chunk = max(1, _CHUNK_ENTRIES // n)
  stats = []
  for start in range(0, n_boot, chunk):
    idx = rng.integers(0, n, size=(min(chunk, n_boot - start), n))
    top = num[idx].sum(axis=1)
    if den is None:
      stats.append(top / n)
    else:
      bottom = den[idx].sum(axis=1)
      # A resample can hold only zero-weight rows, where the ratio is undefined: leave it out
      # rather than invent a value.
      stats.append(np.divide(top, bottom, out=np.full_like(top, np.nan), where=bottom > 0))
  stats = np.concatenate(stats)
  alpha = (1 - level) / 2
  if np.isnan(stats).all():
    return float('nan'), float('nan')
  low, high = np.nanquantile(stats, [alpha, 1 - alpha])
  return float(low), float(high)


def estimate_from_terms(num, den, diagnostics, n_boot, seed, level):
  """sum(num) / sum(den) (den=None: mean(num)) with its bootstrap interval over the rows of
  `num`; an estimator that reduces a log to one term per independent unit (a row here, a slate in
  slate_estimators.py) gets its interval by resampling those units."""
  value = float(num.sum() / (den.sum() if den is not None else len(num)))
  low, high = _bootstrap(num, den, n_boot, seed, level)
  return Estimate(value, low, high, diagnostics)


def ips(log, target_probs, *, n_boot=1000, seed=0, level=0.95):
  w = importance_weights(log, target_probs)
  return estimate_from_terms(w * log.reward, None, weight_diagnostics(w), n_boot, seed, level)


def clipped_ips(log, target_probs, *, max_weight, n_boot=1000, seed=0, level=0.95):
  raw = importance_weights(log, target_probs)
  w = importance_weights(log, target_probs, max_weight)
  diagnostics = weight_diagnostics(w)
  # How much of the log clipping touched: a large share means the estimate is mostly bias.
  diagnostics['clipped_fraction'] = float((raw > max_weight).mean())
  return estimate_from_terms(w * log.reward, None, diagnostics, n_boot, seed, level)


def snips(log, target_probs, *, n_boot=1000, seed=0, level=0.95):
  w = importance_weights(log, target_probs)
  if not w.sum() > 0:
    raise UserError(
        'SNIPS is undefined: the target policy gives zero probability to every logged action, so '
        'the log says nothing about it; log with a policy that explores the target\'s actions.')
  return estimate_from_terms(w * log.reward, w, weight_diagnostics(w), n_boot, seed, level)


def direct_method(reward_model_target, *, n_boot=1000, seed=0, level=0.95):
  q = _float_array(reward_model_target, 'reward_model_target')
  if len(q) == 0:
    raise UserError('reward_model_target is empty: pass one value per logged row.')
  return estimate_from_terms(q, None, {'n': len(q)}, n_boot, seed, level)


def doubly_robust(log, target_probs, reward_model_logged, reward_model_target, *, n_boot=1000,
                  seed=0, level=0.95):
  w = importance_weights(log, target_probs)
  q_logged = _float_array(reward_model_logged, 'reward_model_logged', len(log))
  q_target = _float_array(reward_model_target, 'reward_model_target', len(log))
  terms = q_target + w * (log.reward - q_logged)
  return estimate_from_terms(terms, None, weight_diagnostics(w), n_boot, seed, level)


def estimate_all(log, target_probs, reward_model_logged=None, reward_model_target=None, *,
                 max_weight=10.0, n_boot=1000, seed=0, level=0.95):
  """Every estimator that the inputs allow; DM and DR need both reward-model arrays."""
  kw = dict(n_boot=n_boot, seed=seed, level=level)
  out = {
      'ips': ips(log, target_probs, **kw),
      'clipped_ips': clipped_ips(log, target_probs, max_weight=max_weight, **kw),
      'snips': snips(log, target_probs, **kw),
  }
  if (reward_model_logged is None) != (reward_model_target is None):
    raise UserError('Pass both reward_model_logged and reward_model_target for DM and DR, or '
                    'neither.')
  if reward_model_target is not None:
    dm = direct_method(reward_model_target, **kw)
    # DM uses no weights, but the overlap of this log still says whether DM can be checked
    # against the weighted estimators, so it is printed alongside.
    diagnostics = {**weight_diagnostics(importance_weights(log, target_probs)), **dm.diagnostics}
    out['dm'] = dataclasses.replace(dm, diagnostics=diagnostics)
    out['dr'] = doubly_robust(log, target_probs, reward_model_logged, reward_model_target, **kw)
  return out


def format_table(estimates, level=0.95):
  """One line per estimator: value, interval and the overlap diagnostics."""
  def num(d, key, fmt):
    return format(d[key], fmt) if key in d else '-'

  ci = f'{round(level * 100)}% CI'
  lines = [f'{"estimator":<12} {"value":>9} {ci:>21} {"ESS":>9} {"max w":>9} {"mean w":>8} '
           f'{"n":>8}']
  for name, e in estimates.items():
    d = e.diagnostics
    interval = f'[{e.ci_low:.4f}, {e.ci_high:.4f}]'
    lines.append(
        f'{name:<12} {e.value:>9.4f} {interval:>21} {num(d, "effective_sample_size", ".1f"):>9} '
        f'{num(d, "max_weight", ".3g"):>9} {num(d, "mean_weight", ".3f"):>8} {d["n"]:>8}')
  return '\n'.join(lines)


def report(estimates: dict, out: str | None = None, **about) -> dict:
  """`about` (what was estimated, on which log) with every estimate and the printed table;
  written to OUT/ope.json when `out` is given (what `jaxrec ope` writes)."""
  result = {**about, "estimates": {name: dataclasses.asdict(e) for name, e in estimates.items()},
            "table": format_table(estimates)}
  if out:
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "ope.json"), "w") as f:
      json.dump(result, f, indent=2)
  return result
