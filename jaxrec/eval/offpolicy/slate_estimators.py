"""Off-policy estimates for logs of ranked lists (slates, top-k lists).

A slate log records, per request i, the context, the L items shown in slot order, a reward per
slot (click, watch fraction) and the logging policy's propensities of what it showed. The value
of a policy is the expected total reward of the list it shows: V(pi) = E_x E_{s~pi} sum_j r_j.

Weighting whole slates (pi(s) / mu(s)) is unbiased but hopeless: with 10 slots over a catalogue,
almost no logged slate is one the target would have shown. Each estimator here trades that
variance for an assumption about how the reward depends on the slate:

  * position_ips (independent-item / item-position IPS, Li et al. 2018): the reward at slot j
    depends only on the context, the slot and the item in it, not on the other items. Weights
    per slot: pi_j(s_j|x) / mu_j(s_j|x), the target's and logger's marginal probabilities of that
    item at that slot. Any logger with positivity at every (slot, item) the target uses.
  * pseudo_inverse (PI, Swaminathan et al. 2017): only the slate's total reward need be observed,
    and it must be additive over (slot, item) pairs: r(x, s) = sum_j phi_j(x, s_j), where a slot's
    observed reward may include spill-over from other slots as long as the total adds up. The
    closed form used here, w = sum_j pi_j / mu_j - L + 1, is exact when the logger fills slots
    independently (mu(s|x) = prod_j mu_j(s_j|x), e.g. one item per row of a page, each row from
    its own pool); for other loggers (sampling without replacement) it is biased. The target may
    be any policy, correlated over slots. Weights can be negative.
  * topk_ips (rank-independent top-k): a shown item's reward does not depend on its position or
    the other items (a carousel the user scans whole). The value is that of the target's top-k
    list; a logged item counts with weight P_pi(item in top-k | x) / P_mu(item in slate | x), the
    logger's inclusion probability, so it needs `inclusion_propensity` in the log. A
    deterministic target's top-k turns into those probabilities with `topk_membership`.
  * cascade_ips (RIPS, Li et al. 2018): the user reads top-down, so the reward at slot j depends
    only on the items in slots 0..j. Weights pi(s_0..s_j|x) / mu(s_0..s_j|x) on prefixes, from
    `prefix_propensity` (for a Plackett-Luce logger, the running product of each slot's
    probability given the items above it: `prefix_from_conditional`). Reward at slot j counts
    only while the target's list agrees with the logged one down to j (`prefix_match` for a
    deterministic target), so it is a top-k estimator when only the first k slots are rewarded.

Every estimate is the mean over slates of one term per slate, so the bootstrap of estimators.py,
which resamples rows of those terms, resamples whole slates (a cluster bootstrap: the slots of one
slate share a user and a context and are not independent). Diagnostics are estimators.py's (ESS, max
and mean weight) over the weights each estimator uses, plus the number of slates.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.errors import UserError
from jaxrec.eval.offpolicy import estimators


@dataclasses.dataclass
class SlateLog:
  """n logged slates of L slots each.

  context: [n] int, the request's context id (user, or a request id).
  slate: [n, L] int item ids in slot order (slot 0 is the top).
  reward: [n, L] float reward observed at each slot.

  And one or more of the logging policy's propensities, each [n, L] float in (0, 1]; each
  estimator names the one it reads:
  propensity: the marginal probability of showing slate[i, j] at slot j in context i
    (position_ips, pseudo_inverse).
  inclusion_propensity: the probability that slate[i, j] appears anywhere in the slate
    (topk_ips; equal to `propensity` when an item can only ever be placed in one slot).
  prefix_propensity: the probability that the slate's slots 0..j hold exactly slate[i, :j+1]
    (cascade_ips).
  """
  context: np.ndarray
  slate: np.ndarray
  reward: np.ndarray
  propensity: np.ndarray | None = None
  inclusion_propensity: np.ndarray | None = None
  prefix_propensity: np.ndarray | None = None

  def __post_init__(self):
    self.context = estimators._int_array(self.context, 'context', 'SlateLog')
    n = len(self.context)
    if n == 0:
      raise UserError('SlateLog is empty: pass at least one logged slate.')
    self.slate = _matrix(self.slate, 'slate', n, None, integer=True)
    shape = self.slate.shape
    self.reward = _matrix(self.reward, 'reward', n, shape[1])
    if all(getattr(self, name) is None for name in PROPENSITIES):
      raise UserError(f'SlateLog needs the logging policy\'s propensities: pass one or more of '
                      f'{", ".join(PROPENSITIES)}.')
    for name in PROPENSITIES:
      if getattr(self, name) is not None:
        setattr(self, name, _propensity(_matrix(getattr(self, name), name, n, shape[1]), name))

  def __len__(self):
    return len(self.context)

  @property
  def num_slots(self) -> int:
    return self.slate.shape[1]

  def to_bandit_log(self) -> estimators.BanditLog:
    """One row per (slate, slot), with the slot kept: what single-decision estimators read."""
    n, length = self.slate.shape
    return estimators.BanditLog(context=np.repeat(self.context, length), action=self.slate.ravel(),
                         reward=self.reward.ravel(), propensity=self.needs('propensity').ravel(),
                         slot=np.tile(np.arange(length), n))

  def needs(self, name: str) -> np.ndarray:
    """The named propensities, or a UserError saying which estimator needs them."""
    value = getattr(self, name)
    if value is None:
      raise UserError(f'this estimator needs SlateLog.{name} ({PROPENSITY_MEANINGS[name]}); the '
                      'log does not have it. Log it, or use an estimator that reads the '
                      'propensities the log has.')
    return value


PROPENSITY_MEANINGS = {
    'propensity': "the logger's probability of each item at its slot",
    'inclusion_propensity': "the logger's probability of each item anywhere in the slate",
    'prefix_propensity': "the logger's probability of each slate's items down to each slot",
}
PROPENSITIES = tuple(PROPENSITY_MEANINGS)


def _matrix(x, name, n, length, integer=False):
  """A [n, length] array, with the ragged or mis-sized slate named in the error."""
  if isinstance(x, (list, tuple)):
    lengths = [len(row) if hasattr(row, '__len__') else -1 for row in x]
    if len(set(lengths)) > 1:
      i = next(i for i, m in enumerate(lengths) if m != lengths[0])
      raise UserError(
          f'SlateLog.{name} is ragged: slate {i} has {lengths[i]} slots but slate 0 has '
          f'{lengths[0]}. Every slate needs the same number of slots: log a fixed slate size, or '
          'split the log by slate size and estimate each part.')
  a = np.asarray(x) if integer else np.asarray(x, dtype=np.float64)
  if a.ndim != 2:
    raise UserError(f'SlateLog.{name} must be [slates, slots], got shape {a.shape}.')
  if a.shape[0] != n:
    raise UserError(f'SlateLog.{name} has {a.shape[0]} slates but context has {n}; pass one row '
                    'per logged slate.')
  if length is not None and a.shape[1] != length:
    raise UserError(f'SlateLog.{name} has {a.shape[1]} slots per slate but slate has {length}; '
                    'pass one value per shown item.')
  if a.shape[1] == 0:
    raise UserError(f'SlateLog.{name} has no slots: a slate needs at least one item.')
  if integer:
    if not np.issubdtype(a.dtype, np.integer):
      raise UserError(f'SlateLog.{name} must hold integer item ids, got dtype {a.dtype}.')
    return a.astype(np.int64)
  if not np.isfinite(a).all():
    i, j = np.argwhere(~np.isfinite(a))[0]
    raise UserError(f'SlateLog.{name}[{i}, {j}] = {a[i, j]!r} is not finite; drop or repair that '
                    'slate.')
  return a


def _propensity(p, name):
  bad = ~((p > 0) & (p <= 1))
  if bad.any():
    i, j = np.argwhere(bad)[0]
    raise UserError(
        f'SlateLog.{name}[{i}, {j}] = {p[i, j]!r} is outside (0, 1]; log the logging policy\'s '
        'probability of the shown item (a zero propensity means it could not have been shown).')
  return p


def _target(log, target_probs, name='target_probs'):
  p = np.asarray(target_probs, dtype=np.float64)
  if p.shape != log.slate.shape:
    raise UserError(f'{name} has shape {p.shape} but the log\'s slates are {log.slate.shape}; '
                    'pass the target\'s probability for every logged (slate, slot).')
  bad = ~((p >= 0) & (p <= 1))
  if bad.any():
    i, j = np.argwhere(bad)[0]
    raise UserError(f'{name}[{i}, {j}] = {p[i, j]!r} is outside [0, 1]; pass probabilities.')
  return p


def _diagnostics(weights, num_slates):
  return {**estimators.weight_diagnostics(np.ravel(weights)), 'slates': int(num_slates)}


def position_ips(log: SlateLog, target_probs, *, n_boot=1000, seed=0,
                 level=0.95) -> estimators.Estimate:
  """Independent-item IPS. target_probs[i, j]: the target's probability of showing slate[i, j]
  at slot j in context i (its marginal at that slot)."""
  w = _target(log, target_probs) / log.needs('propensity')
  per_slate = (w * log.reward).sum(axis=1)
  return estimators.estimate_from_terms(per_slate, None, _diagnostics(w, len(log)), n_boot, seed,
                                        level)


def pseudo_inverse_weights(log: SlateLog, target_probs) -> np.ndarray:
  """[n] PI weight of each slate under a slot-independent logger: sum_j pi_j/mu_j - L + 1."""
  w = _target(log, target_probs) / log.needs('propensity')
  return w.sum(axis=1) - log.num_slots + 1


def pseudo_inverse(log: SlateLog, target_probs, slate_reward=None, *, n_boot=1000, seed=0,
                   level=0.95) -> estimators.Estimate:
  """PI estimate of the target's expected slate reward. `slate_reward` [n] is the observed total
  per slate (default: the sum of the per-slot rewards); only the total is used."""
  w = pseudo_inverse_weights(log, target_probs)
  if slate_reward is None:
    slate_reward = log.reward.sum(axis=1)
  else:
    slate_reward = estimators._float_array(slate_reward, 'slate_reward', len(log))
  return estimators.estimate_from_terms(w * slate_reward, None, _diagnostics(w, len(log)), n_boot,
                                        seed, level)


def topk_membership(log: SlateLog, target_lists, k: int) -> np.ndarray:
  """[n, L] 1.0 where slate[i, j] is among the first k items of `target_lists[i]` (a
  deterministic target's ranking for slate i's context), else 0.0."""
  target_lists = np.asarray(target_lists)
  if target_lists.ndim != 2 or len(target_lists) != len(log):
    raise UserError(f'target_lists must be [slates, list length] with one ranking per logged '
                    f'slate ({len(log)}), got shape {target_lists.shape}.')
  if not (isinstance(k, (int, np.integer)) and 1 <= k <= target_lists.shape[1]):
    raise UserError(f'k = {k!r} must be an integer in 1..{target_lists.shape[1]} (the length of '
                    'the target lists).')
  top = target_lists[:, :k]
  return (log.slate[:, :, None] == top[:, None, :]).any(axis=2).astype(np.float64)


def topk_ips(log: SlateLog, target_inclusion, *, n_boot=1000, seed=0,
             level=0.95) -> estimators.Estimate:
  """Rank-independent IPS of the target's top-k list. target_inclusion[i, j]: the probability
  that the target's top-k in context i contains slate[i, j] (see topk_membership)."""
  w = _target(log, target_inclusion, 'target_inclusion') / log.needs('inclusion_propensity')
  per_slate = (w * log.reward).sum(axis=1)
  return estimators.estimate_from_terms(per_slate, None, _diagnostics(w, len(log)), n_boot, seed,
                                        level)


def prefix_from_conditional(conditional) -> np.ndarray:
  """[n, L] prefix probabilities from each slot's probability given the items above it (what a
  Plackett-Luce or other top-down sampler knows when it draws)."""
  return np.cumprod(np.asarray(conditional, dtype=np.float64), axis=1)


def prefix_match(log: SlateLog, target_lists) -> np.ndarray:
  """[n, L] 1.0 while a deterministic target's ranking `target_lists[i]` agrees with slate i
  from the top down to slot j, else 0.0: the target's prefix probability of the logged prefix."""
  target_lists = np.asarray(target_lists)
  length = log.num_slots
  if target_lists.ndim != 2 or len(target_lists) != len(log) or target_lists.shape[1] < length:
    raise UserError(f'target_lists must be [slates, >= {length}] with one ranking per logged '
                    f'slate ({len(log)}), got shape {target_lists.shape}.')
  same = target_lists[:, :length] == log.slate
  return np.cumprod(same, axis=1).astype(np.float64)


def cascade_ips(log: SlateLog, target_prefix_probs, *, k: int | None = None, n_boot=1000, seed=0,
                level=0.95) -> estimators.Estimate:
  """Cascade IPS (RIPS in Li et al. 2018) of the target's reward in slots 0..k-1 (default all).
  target_prefix_probs[i, j]: the target's probability of showing slate[i, :j+1] as its first
  j + 1 items (see prefix_match)."""
  k = log.num_slots if k is None else k
  if not (isinstance(k, (int, np.integer)) and 1 <= k <= log.num_slots):
    raise UserError(f'k = {k!r} must be an integer in 1..{log.num_slots} (the slate length).')
  w = (_target(log, target_prefix_probs, 'target_prefix_probs') /
       log.needs('prefix_propensity'))[:, :k]
  per_slate = (w * log.reward[:, :k]).sum(axis=1)
  return estimators.estimate_from_terms(per_slate, None, _diagnostics(w, len(log)), n_boot, seed,
                                        level)


def estimate_all(log: SlateLog, target_probs=None, target_inclusion=None,
                 target_prefix_probs=None, *, n_boot=1000, seed=0, level=0.95) -> dict:
  """Every slate estimator whose target probabilities are given, as estimators.format_table reads
  them:
  target_probs -> position_ips and pseudo_inv, target_inclusion -> topk_ips,
  target_prefix_probs -> cascade_ips."""
  kw = dict(n_boot=n_boot, seed=seed, level=level)
  out = {}
  if target_probs is not None:
    out['position_ips'] = position_ips(log, target_probs, **kw)
    out['pseudo_inv'] = pseudo_inverse(log, target_probs, **kw)
  if target_inclusion is not None:
    out['topk_ips'] = topk_ips(log, target_inclusion, **kw)
  if target_prefix_probs is not None:
    out['cascade_ips'] = cascade_ips(log, target_prefix_probs, **kw)
  if not out:
    raise UserError('pass the target policy\'s probabilities for at least one estimator: '
                    'target_probs, target_inclusion or target_prefix_probs.')
  return out
