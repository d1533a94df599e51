"""A bundle's serving pipeline as policies and scorers in the simulated world
(jaxrec/eval/simulation/): what `jaxrec simulate` and `jaxrec ope` run on a simulation log.

  ServingPolicy     an export bundle through the serving pipeline in-process (recommender.py:
                    retrieval, DLRM ranking, re-ranking with RerankConfig), propensities from its
                    exploration.
  ServingScorer     the serving pipeline's top C by the ranker's policy score (two-tower retrieval
                    from each user's dataset history plus their clicks in the simulation, DLRM),
                    with the ranker's head predictions as features.
  PopularityScorer  re-scores another scorer's candidates by the dataset's item counts.
  make_policy       the bundle's pipeline as a deterministic policy, or softmax sampling over its
                    ranker's top candidates (a logging policy with known propensities).

The world-only policies (softmax, greedy, oracle) are in jaxrec/eval/simulation/policies.py; the
interfaces (`slates`, `probabilities`, scorers) are documented there.
"""

from __future__ import annotations

import os

import numpy as np

from jaxrec.data.vocab import FIRST_ID
from jaxrec.errors import UserError
from jaxrec.eval.simulation.policies import SoftmaxPolicy, check_temperature
from jaxrec.eval.simulation.world import Requests, World
from jaxrec.rerank.pipeline import RerankConfig
from jaxrec.rerank.posteriors import BetaPosteriors
from jaxrec.serve.recommender import Recommender, Request, ServingConfig

BATCH = 32  # the serving pipeline's largest compiled batch
# (bundle, serving config) -> Recommender: a process that runs several policies on one bundle (a
# simulation, then off-policy evaluation of it; a benchmark) loads and compiles the models once.
_RECOMMENDERS: dict = {}


class _Bundle:
  """A bundle's serving pipeline and its map between the world's items and the vocabulary."""

  def __init__(self, bundle_path: str, world: World, serving_config=None):
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


def make_policy(bundle_path: str, world: World, *, mmr_lambda: float = 0.7,
                temperature: float | None = None, candidates: int = 20, retrieved: int = 200):
  """The bundle's serving pipeline as a policy: deterministic (MMR with `mmr_lambda`), or, with a
  `temperature`, Plackett-Luce sampling from the ranker's top `candidates` (a logging policy with
  known propensities)."""
  if temperature is not None:
    check_temperature(temperature)  # before the models load
    return SoftmaxPolicy(ServingScorer(bundle_path, world, candidates, retrieved), temperature)
  if not (isinstance(retrieved, (int, np.integer)) and retrieved >= 1):
    raise UserError(f"retrieved must be a positive integer, got {retrieved!r}")
  return ServingPolicy(bundle_path, world, ServingConfig(
      candidates=retrieved, rerank=RerankConfig(mmr_lambda=mmr_lambda)))
