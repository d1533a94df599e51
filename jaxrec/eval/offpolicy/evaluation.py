"""Off-policy evaluation of a target policy on a simulation's decision log (simulation/log.py
format): the inputs estimators.py needs, built from the log alone.

The decision is a slate's first slot (the log's `slot == 0` rows): its propensity is the logging
policy's marginal probability of that item there, so per-decision IPS is exact. Per logged day, the
target sees what a live policy would: each user's dataset history plus their clicks on the earlier
logged days (simulation/log.py: replay_state); its first-slot distribution over its candidates gives
`target_probs` of the logged items. The estimate is the target's value on the logged contexts (the
users who came back under the logging policy, with the histories it gave them), not the long-run
value of running the target for days: that only a simulation of it measures.

The direct method's reward model is fit on the logged rows only, never on the world: a
logistic regression of the reward (click, or a fraction such as watch) on the target scorer's
features of the logged item (the ranker's head predictions as logits, and the item's log
popularity). Rows whose item the target's scorer does not rank have no features; they carry
zero target weight, so DR needs no model value there, and they do not train the model.
"""

from __future__ import annotations

import numpy as np

from jaxrec.errors import UserError
from jaxrec.eval.offpolicy import estimators
from jaxrec.eval.simulation.log import replay_state
from jaxrec.eval.simulation.world import Requests, World

REWARDS = ("click", "watch", "like")


def _logit(p):
  p = np.clip(p, 1e-4, 1 - 1e-4)
  return np.log(p) - np.log1p(-p)


class RewardModel:
  """Logistic regression (IRLS with a small ridge) of a reward in [0, 1] on features."""

  def __init__(self, ridge: float = 1e-3):
    self.ridge = ridge
    self.mean = self.scale = self.coef = None

  def fit(self, x: np.ndarray, y: np.ndarray, iterations: int = 25) -> RewardModel:
    if len(y) < 10:
      raise UserError(f"the reward model needs logged rows to fit on; only {len(y)} have "
                      "features. Log more decisions, or use a target that ranks the logged items.")
    self.mean, self.scale = x.mean(0), x.std(0) + 1e-6
    z = self._design(x)
    coef = np.zeros(z.shape[1])
    for _ in range(iterations):
      p = 1 / (1 + np.exp(-z @ coef))
      w = np.maximum(p * (1 - p), 1e-6)
      hessian = (z * w[:, None]).T @ z + self.ridge * len(y) * np.eye(len(coef))
      step = np.linalg.solve(hessian, z.T @ (y - p) - self.ridge * len(y) * coef)
      coef += step
      if np.abs(step).max() < 1e-8:
        break
    self.coef = coef
    return self

  def _design(self, x):
    return np.concatenate([np.ones((len(x), 1)), (x - self.mean) / self.scale], 1)

  def predict(self, x: np.ndarray) -> np.ndarray:
    shape = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    return (1 / (1 + np.exp(-self._design(flat) @ self.coef))).reshape(shape)


def features(scorer, world, state, requests) -> tuple[np.ndarray, np.ndarray]:
  """(candidates [U, C], features [U, C, F]) from a scorer: its head predictions as logits when
  it has heads (jaxrec/serve/policies.py: ServingScorer), its score otherwise; and log item
  popularity."""
  if hasattr(scorer, "scored"):
    candidates, _, heads = scorer.scored(world, state, requests)
    x = _logit(heads)
  else:
    candidates, scores = scorer(world, state, requests)
    x = scores[..., None]
  popularity = getattr(scorer, "log_count", None)
  if popularity is None and hasattr(scorer, "bundle"):
    counts = scorer.bundle.recommender.data.item_counts
    popularity = np.log1p(counts[scorer.bundle.vocab_of_rank])
  if popularity is not None:
    x = np.concatenate([x, popularity[candidates][..., None]], -1)
  return candidates, x


def log_contexts(world: World, columns: dict):
  """Per logged day: (day, first-slot row indices, the replayed state, the requests)."""
  first = np.flatnonzero(columns["slot"] == 0)
  for day in np.unique(columns["day"][first]):
    rows = first[columns["day"][first] == day]
    users = columns["user"][rows]
    if users.max() >= world.num_users:
      raise UserError(f"the log names user {users.max()} but its world has {world.num_users} "
                      "users; the log and its log.json do not belong together.")
    requests = Requests(users, columns["now"][rows], world.home_device[users],
                        world.hour[users], int(day) - 1)
    yield int(day), rows, replay_state(world, columns, int(day)), requests


def estimate(logged: np.ndarray, propensity: np.ndarray, reward: np.ndarray,
             candidates: np.ndarray, probs: np.ndarray, x: np.ndarray | None = None, *,
             max_weight=10.0, n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
  """{estimator: estimators.Estimate} from per-decision arrays: the logged item [n], its
  propensity [n] and reward [n]; the target's candidates [n, C] and first-slot probabilities over
  them [n, C]; and, for DM and DR, the features [n, C, F] of the candidates (the reward model is
  fit on the logged rows whose item is among the candidates)."""
  match = candidates == logged[:, None]
  target_probs = (probs * match).sum(1)
  log = estimators.BanditLog(np.arange(len(logged)), logged, reward, propensity)
  q_logged = q_target = None
  if x is not None:
    covered = match.any(1)
    logged_x = x[np.arange(len(logged)), match.argmax(1)]
    model = RewardModel().fit(logged_x[covered], log.reward[covered])
    q_logged = np.where(covered, model.predict(logged_x), 0.0)
    q_target = (probs * model.predict(x)).sum(1)
  return estimators.estimate_all(log, target_probs, q_logged, q_target, max_weight=max_weight,
                          n_boot=n_boot, seed=seed, level=level)


def evaluate(world: World, columns: dict, target, *, reward: str = "click", max_weight=10.0,
             n_boot: int = 1000, seed: int = 0, level: float = 0.95) -> dict:
  """{estimator: estimators.Estimate} of `target`'s expected first-slot reward, from the log."""
  if reward not in REWARDS:
    raise UserError(f"unknown reward {reward!r}; choose one of {', '.join(REWARDS)}.")
  if not (columns["slot"] == 0).any():
    raise UserError("the log has no first-slot decisions (slot 0) to evaluate.")
  scorer = getattr(target, "scorer", None)
  parts = []
  for _, rows, state, requests in log_contexts(world, columns):
    candidates, probs = target.probabilities(world, state, requests)
    x = None
    if scorer is not None:
      same, x = features(scorer, world, state, requests)
      # The target's probabilities are over its scorer's candidates: the same items in order.
      assert np.array_equal(same, candidates)
    parts.append((rows, candidates, probs, x))
  rows = np.concatenate([p[0] for p in parts])
  width = max(p[1].shape[1] for p in parts)
  pad = lambda a, fill: np.pad(a, [(0, 0), (0, width - a.shape[1])] + [(0, 0)] * (a.ndim - 2),
                               constant_values=fill)
  candidates = np.concatenate([pad(p[1], -1) for p in parts])
  probs = np.concatenate([pad(p[2], 0.0) for p in parts])
  x = np.concatenate([pad(p[3], 0.0) for p in parts]) if scorer is not None else None
  return estimate(world.rank_of_id[columns["item"][rows]], columns["propensity"][rows],
                  columns[reward][rows].astype(np.float64), candidates, probs, x,
                  max_weight=max_weight, n_boot=n_boot, seed=seed, level=level)
