"""Policies that choose slates in the simulated world (simulator.py), with their propensities.

A policy answers `slates(world, state, requests, k, rng) -> (items [U, k], propensity [U, k])`:
world item indices and, per slot, the probability that the policy put that item in that slot
given the items above it (1 for deterministic choices). For a one-slot slate that is the
probability of the shown action, what the off-policy estimators (ope.py) weigh by.

Policies that score a candidate set also answer `probabilities(world, state, requests) ->
(candidates [U, C], probs [U, C])`: the distribution of their first slot, which is what a target
policy must give the estimators on logged contexts.

  SoftmaxPolicy   Plackett-Luce sampling from softmax(score / temperature) over a scorer's
                  candidates: a logging policy with known propensities.
  GreedyPolicy    the top-k of a scorer, optionally re-ranked by MMR (deterministic).
  ServingPolicy   an export bundle through the serving pipeline in-process (serving/recommender.py:
                  retrieval, DLRM ranking, re-ranking with RerankConfig), propensities from its
                  exploration.
Scorers (`scorer(world, state, requests) -> (candidates [U, C], scores [U, C])`):
  ServingScorer   the serving pipeline's top C by the ranker's policy score (two-tower retrieval
                  from each user's dataset history plus their clicks in the simulation, DLRM),
                  with the ranker's head predictions as features.
  PopularityScorer  re-scores another scorer's candidates by the dataset's item counts.
  OracleScorer    the world's own affinity: a reference, and a scorer for tests.
"""

from __future__ import annotations

import os

import numpy as np

from jaxrec.data.vocab import FIRST_ID
from jaxrec.errors import UserError
from jaxrec.eval.simulator import Requests, World
from jaxrec.rerank.mmr import mmr

BATCH = 32  # the serving pipeline's largest compiled batch
# (bundle, serving config) -> Recommender: a process that runs several policies on one bundle (a
# simulation, then off-policy evaluation of it; a benchmark) loads and compiles the models once.
_RECOMMENDERS: dict = {}


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


class _Bundle:
  """A bundle's serving pipeline and its map between the world's items and the vocabulary."""

  def __init__(self, bundle_path: str, world: World, serving_config=None):
    from jaxrec.rerank.posteriors import BetaPosteriors
    from serving.recommender import Recommender, ServingConfig
    config = serving_config or ServingConfig()
    key = (os.path.abspath(bundle_path), repr(config))
    if key not in _RECOMMENDERS:
      while len(_RECOMMENDERS) >= 4:
        _RECOMMENDERS.pop(next(iter(_RECOMMENDERS)))
      _RECOMMENDERS[key] = Recommender(bundle_path, config, BetaPosteriors(0))
    self.recommender = _RECOMMENDERS[key]
    vocab = self.recommender.items
    self.vocab_of_rank = vocab.lookup(world.item_ids.astype(vocab.raw_ids.dtype))
    if (self.vocab_of_rank < FIRST_ID).any():
      raise UserError(f"{bundle_path}: its dataset's items are not the world's; export a bundle "
                      "trained on a dataset prepared from the same synthetic config.")
    self.rank_of_vocab = np.full(len(vocab), -1)
    self.rank_of_vocab[self.vocab_of_rank] = np.arange(len(world.item_ids))

  def recommend(self, requests: list) -> list[dict]:
    """The pipeline's answers, BATCH requests at a time; a short last batch is padded with
    copies of its first request so that every call has one shape and compiles once."""
    out = []
    for lo in range(0, len(requests), BATCH):
      chunk = requests[lo:lo + BATCH]
      out += self.recommender.recommend(chunk + [chunk[0]] * (BATCH - len(chunk)))[:len(chunk)]
    return out

  def requests(self, world, state, requests: Requests, k: int = 1):
    from serving.recommender import Request
    histories = world.simulated_histories(state, requests.users)
    return [Request(user_id=str(u), history=[(str(i), t) for i, t in h], device=str(d),
                    hour=int(hr), k=k, now=int(now))
            for u, h, d, hr, now in zip(requests.users, histories, requests.device,
                                        requests.hour, requests.now)]


class ServingScorer:
  """The serving pipeline's ranking as a scorer: its top C items by the ranker's policy score (MMR
  off), with every head's prediction kept as features for a reward model."""

  def __init__(self, bundle_path: str, world: World, candidates: int = 20,
               retrieved: int = 200):
    from jaxrec.rerank.pipeline import RerankConfig
    from serving.recommender import ServingConfig
    for name, value in (("candidates", candidates), ("retrieved", retrieved)):
      if not (isinstance(value, (int, np.integer)) and value >= 1):
        raise UserError(f"{name} must be a positive integer, got {value!r}")
    if candidates > retrieved:
      raise UserError(f"candidates ({candidates}) cannot exceed the items retrieved per request "
                      f"({retrieved}).")
    self.bundle = _Bundle(bundle_path, world, ServingConfig(
        candidates=retrieved, max_k=candidates, rerank=RerankConfig(mmr_lambda=1.0)))
    self.num_candidates = candidates
    self.heads = list(self.bundle.recommender.heads)
    self.name = f"ranker top-{candidates}"
    self._cache = {}

  def __call__(self, world, state, requests):
    return self.scored(world, state, requests)[:2]

  def scored(self, world, state, requests):
    """(candidates [U, C], policy scores [U, C], head predictions [U, C, H])."""
    # Target policies are asked about the same contexts as the logging policy: score once.
    key = (id(state), state.day, len(state.clicks), requests.users.tobytes())
    if key not in self._cache:
      self._cache = {key: self._score(world, state, requests)}
    return self._cache[key]

  def _score(self, world, state, requests):
    rec, c = self.bundle.recommender, self.num_candidates
    u = len(requests.users)
    items, scores = np.zeros((u, c), np.int64), np.zeros((u, c))
    heads = np.zeros((u, c, len(self.heads)))
    for row, response in enumerate(self.bundle.recommend(
        self.bundle.requests(world, state, requests, c))):
      shown = response["items"]
      if len(shown) < c:
        raise UserError(f"the serving pipeline ranked only {len(shown)} items; ask for fewer "
                        f"candidates than {c}.")
      items[row] = self.bundle.rank_of_vocab[rec.item_ids([x["item_id"] for x in shown])]
      scores[row] = [x["score"] for x in shown]
      heads[row] = [[x["heads"][h] for h in self.heads] for x in shown]
    return items, scores, heads


class PopularityScorer:
  """Another scorer's candidates, ranked by how often the dataset's users interacted with them."""

  def __init__(self, base: ServingScorer):
    self.base = base
    counts = base.bundle.recommender.data.item_counts
    self.log_count = np.log1p(counts[base.bundle.vocab_of_rank]).astype(np.float64)
    self.name = f"popularity among {base.name}"

  def __call__(self, world, state, requests):
    candidates, _ = self.base(world, state, requests)
    return candidates, self.log_count[candidates]


class ServingPolicy:
  """The bundle's full serving pipeline. `serving_config` defaults to MMR lambda 0.7 with no
  freshness or exploration slots: a deterministic policy (propensity 1), unless exploration is
  configured, whose propensities the re-ranker reports."""

  def __init__(self, bundle_path: str, world: World, serving_config=None):
    from jaxrec.rerank.pipeline import RerankConfig
    from serving.recommender import ServingConfig
    config = serving_config or ServingConfig(candidates=200, rerank=RerankConfig(mmr_lambda=0.7))
    self.bundle = _Bundle(bundle_path, world, config)
    self.name = f"serving pipeline, MMR lambda={config.rerank.mmr_lambda:g}"

  def slates(self, world, state, requests, k, rng):
    rec = self.bundle.recommender
    if k > rec.config.max_k:
      raise UserError(f"k={k} is more than the serving config's max_k={rec.config.max_k}.")
    items = np.zeros((len(requests.users), k), np.int64)
    propensity = np.ones((len(requests.users), k))
    for row, response in enumerate(self.bundle.recommend(
        self.bundle.requests(world, state, requests, k))):
      shown = response["items"]
      if len(shown) < k:
        raise UserError(f"the serving pipeline returned {len(shown)} items for k={k}; raise "
                        "ServingConfig.candidates.")
      items[row] = self.bundle.rank_of_vocab[rec.item_ids([x["item_id"] for x in shown])]
      propensity[row] = [x["propensity"] for x in shown]
    return items, propensity


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
