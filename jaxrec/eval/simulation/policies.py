"""Policies that choose slates in the simulated world (world.py), with their propensities.

A policy answers `slates(world, state, requests, k, rng) -> (items [U, k], propensity [U, k])`:
world item indices and, per slot, the probability that the policy put that item in that slot
given the items above it (1 for deterministic choices). For a one-slot slate that is the
probability of the shown action, what the off-policy estimators (offpolicy/estimators.py) weigh
by.

Policies that score a candidate set also answer `probabilities(world, state, requests) ->
(candidates [U, C], probs [U, C])`: the distribution of their first slot, which is what a target
policy must give the estimators on logged contexts.

  SoftmaxPolicy   Plackett-Luce sampling from softmax(score / temperature) over a scorer's
                  candidates: a logging policy with known propensities.
  GreedyPolicy    the top-k of a scorer, optionally re-ranked by MMR (deterministic).
Scorers (`scorer(world, state, requests) -> (candidates [U, C], scores [U, C])`):
  OracleScorer    the world's own affinity: a reference, and a scorer for tests.
A bundle's serving pipeline as a policy or scorer (ServingPolicy, ServingScorer,
PopularityScorer) is in jaxrec/serve/policies.py.
"""

from __future__ import annotations

import numpy as np

from jaxrec.errors import UserError
from jaxrec.rerank.mmr import mmr


def check_temperature(temperature):
  if not (isinstance(temperature, (int, float)) and np.isfinite(temperature) and temperature > 0):
    raise UserError(f"temperature must be a positive number, got {temperature!r}; smaller is "
                    "closer to greedy.")


def softmax(scores: np.ndarray, temperature: float) -> np.ndarray:
  z = np.asarray(scores, np.float64) / temperature
  z = np.where(np.isfinite(z), z, -np.inf)
  z = z - z.max(1, keepdims=True)
  e = np.exp(z)
  return e / e.sum(1, keepdims=True)


class SoftmaxPolicy:
  def __init__(self, scorer, temperature: float):
    check_temperature(temperature)
    self.scorer, self.temperature = scorer, float(temperature)
    self.name = f"softmax(T={temperature:g}) over {scorer.name}"

  def probabilities(self, world, state, requests):
    candidates, scores = self.scorer(world, state, requests)
    return candidates, softmax(scores, self.temperature)

  def slates(self, world, state, requests, k, rng):
    candidates, scores = self.scorer(world, state, requests)
    if k > candidates.shape[1]:
      raise UserError(f"k={k} is more than the {candidates.shape[1]} candidates the scorer gives.")
    z = np.asarray(scores, np.float64) / self.temperature
    # Gumbel-top-k draws a Plackett-Luce ranking: the same law as sampling slot by slot without
    # replacement from the softmax.
    order = np.argsort(-(z + rng.gumbel(size=z.shape)), 1)[:, :k]
    rows = np.arange(len(z))[:, None]
    picked = z[rows, order]
    # Slot j's propensity: its softmax share among the candidates not placed above it.
    z_max = z.max(1, keepdims=True)
    total = np.exp(z - z_max).sum(1, keepdims=True)
    above = np.concatenate([np.zeros((len(z), 1)), np.cumsum(np.exp(picked - z_max), 1)[:, :-1]],
                           1)
    propensity = np.exp(picked - z_max) / (total - above)
    return candidates[rows, order], np.clip(propensity, 1e-12, 1.0)


class GreedyPolicy:
  def __init__(self, scorer, mmr_lambda: float = 1.0):
    if not (isinstance(mmr_lambda, (int, float)) and 0 <= mmr_lambda <= 1):
      raise UserError(f"mmr_lambda must be between 0 and 1 (1 is pure relevance), got "
                      f"{mmr_lambda!r}")
    self.scorer, self.mmr_lambda = scorer, float(mmr_lambda)
    self.name = f"greedy {scorer.name}" + (f", MMR lambda={mmr_lambda:g}" if mmr_lambda < 1
                                           else "")

  def probabilities(self, world, state, requests):
    candidates, scores = self.scorer(world, state, requests)
    probs = np.zeros(scores.shape)
    probs[np.arange(len(scores)), np.argmax(scores, 1)] = 1.0  # MMR keeps the top item first
    return candidates, probs

  def slates(self, world, state, requests, k, rng):
    candidates, scores = self.scorer(world, state, requests)
    if self.mmr_lambda >= 1:
      order = np.argsort(-scores, 1, kind="stable")[:, :k]
    else:
      order = np.stack([mmr(s, world.item_vec[c], k, self.mmr_lambda)
                        for s, c in zip(scores, candidates)])
    return np.take_along_axis(candidates, order, 1), np.ones(order.shape)


class OracleScorer:
  """The world's own click affinity (no fatigue): the reference a learned scorer is measured
  against, and a scorer for tests that need no trained model. Candidates: the top C items."""

  def __init__(self, candidates: int = 20):
    self.num_candidates = candidates
    self.name = f"oracle top-{candidates}"

  def __call__(self, world, state, requests):
    taste = world.taste(requests.users, requests.now)
    scores = taste @ world.item_vec.T
    row_of = np.full(world.num_users, -1)
    row_of[requests.users] = np.arange(len(requests.users))
    for users, items, _ in state.clicks:  # like the bundle's scorer: nothing watched again
      rows = row_of[users]
      scores[rows[rows >= 0], items[rows >= 0]] = -np.inf
    top = np.argpartition(-scores, self.num_candidates, 1)[:, :self.num_candidates]
    top_scores = np.take_along_axis(scores, top, 1)
    order = np.argsort(-top_scores, 1)
    return np.take_along_axis(top, order, 1), np.take_along_axis(top_scores, order, 1)
