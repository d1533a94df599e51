"""The recommendation pipeline over one export bundle, for a batch of requests at a time.

    query embedding (jit) -> retrieval (ScaNN top-N over the catalogue)
    -> multi-task ranking of the N candidates (DLRM, jit) -> combined policy score
    -> re-ranking (MMR diversity, caps, freshness slots, exploration) -> top-k

The query encoder is the bundle's retrieval model: the two-tower's query tower (the user, the
request's context and the history's items and times), or a sequence model such as the foundation
model, whose query is its last state over the most recent window of the history's tokens, every
field of them, built by the task's own `history_batch` (the evaluation pipeline's layout). A
bundle without a ranker ranks the candidates by their retrieval score (query · item), then
re-ranks as usual.

Requests are padded to a few batch sizes compiled at start-up (`warm_up`), so nothing compiles
while serving. A known user's history comes from the bundle's dataset, followed by whatever
history the request carries; an unknown user with no history takes the cold-start path: the
most popular items, ranked, with exploration.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np

from jaxrec.data.pipelines import RankingFeatures
from jaxrec.data import shards
from jaxrec.data.storage import PreparedDataset
from jaxrec.data.events import EventType
from jaxrec.data.tokenize import TOKEN_DTYPE, gap_bucket, hour_of_day, weekday_of
from jaxrec.data.vocab import FIRST_ID, OOV
from jaxrec.errors import UserError
from jaxrec.rerank.pipeline import RerankConfig, rerank
from jaxrec.rerank.posteriors import BetaPosteriors
from jaxrec.retrieval.bundle import load_bundle
from jaxrec.train.restore import load_exported
from jaxrec.train.user_features import UserEncoder

BUCKETS = (1, 2, 4, 8, 16, 32)  # request batch sizes compiled at start-up
RETRIEVAL_HEAD = "retrieval"  # the only score of a bundle without a ranker


@dataclasses.dataclass
class Request:
  user_id: str | None = None
  history: list[tuple[str, int]] = dataclasses.field(default_factory=list)  # (item, unix s)
  device: str | None = None
  hour: int | None = None
  k: int = 20
  exclude: list[str] = dataclasses.field(default_factory=list)
  genres: list[str] = dataclasses.field(default_factory=list)  # filter: any of these genres
  now: int | None = None  # unix seconds; default: the request's arrival


@dataclasses.dataclass
class ServingConfig:
  candidates: int = 1000  # N: retrieved and ranked per request
  max_k: int = 100
  max_history: int = 1000
  # MMR diversity, one slot for an item added in the last day, one Thompson-sampled slot for an
  # item with under 100 impressions.
  rerank: RerankConfig = dataclasses.field(
      default_factory=lambda: RerankConfig(mmr_lambda=0.7, freshness_slots=1, explore_slots=1))
  policy: dict | None = None  # head -> weight; default: the ranker's own
  blocked: tuple[str, ...] = ()  # raw item ids never shown


class Recommender:
  def __init__(self, bundle_path: str, config: ServingConfig, posteriors: BetaPosteriors):
    self.bundle = load_bundle(bundle_path)
    if not self.bundle.dataset_dir:
      raise UserError(f"{bundle_path} has no dataset to read users' histories from (bundles "
                      "exported before it was always included): export it again with `jaxrec "
                      "export --workdir RETRIEVAL_WORKDIR [--ranker RANKING_WORKDIR] --out DIR`.")
    self.path = self.bundle.path
    self.version = os.path.basename(self.path)  # what answers expose: the number, not the path
    self.config = config
    self.data = PreparedDataset(self.bundle.dataset_dir)
    self.items = self.data.vocabs["item"]
    self.devices = self.data.vocabs["device"]
    # Requests name users and items by their raw ids, as strings.
    self.item_raw = np.array([""] * FIRST_ID + [str(x) for x in self.items.raw_ids], dtype=object)
    self.item_index = {raw: i for i, raw in enumerate(self.item_raw) if i >= FIRST_ID}
    self.user_index = {str(raw): i + FIRST_ID
                       for i, raw in enumerate(self.data.vocabs["user"].raw_ids)}
    self.query_model = load_exported(self.bundle.query_encoder_dir, self.bundle.dataset_dir)
    # The two-tower's query tower reads the request's context (device, hour) beside the history;
    # every other model (SASRec, the foundation model, BPR) reads its input the way evaluation
    # builds it, through its task's history_batch.
    self.two_tower = self.query_model.task.config.task == "two_tower"
    self.ranker = None
    if self.bundle.ranker_dir:
      self.ranker = load_exported(self.bundle.ranker_dir, self.bundle.dataset_dir)
      self.heads = self.ranker.task.heads
      self.policy = config.policy or dict(self.ranker.task.config.policy)
      self.score = self.ranker.jit("predictions")
      self.features = RankingFeatures(self.data)
      self.user_encoder = None  # a ranker with the foundation user-embedding feature reads it
      if self.ranker.task.user_encoder_dir:
        encoder = load_exported(self.ranker.task.user_encoder_dir, self.bundle.dataset_dir)
        self.user_encoder = UserEncoder(encoder.task, encoder.graphdef, encoder.state, batch=None)
    else:
      self.heads = {RETRIEVAL_HEAD: None}
      self.policy = config.policy or {RETRIEVAL_HEAD: 1.0}
    unknown_heads = sorted(set(self.policy) - set(self.heads))
    if unknown_heads:
      raise UserError(f"the serving policy names {unknown_heads}, which {bundle_path} does not "
                      f"score: use heads among {list(self.heads)}.")
    self.max_len = self.query_model.task.config.model.max_len
    self.num_candidates = min(config.candidates, len(self.bundle.item_ids))
    self.query_vectors = self.query_model.jit("query_vectors")
    # Vector of every item id (rows 0 and 1 stay zero): MMR's similarity and /v1/similar.
    self.vectors = np.zeros((len(self.items), self.bundle.items.shape[1]), np.float32)
    self.vectors[self.bundle.item_ids] = self.bundle.items
    self.popular = np.argsort(-self.data.item_counts, kind="stable")[:self.num_candidates]
    self.popularity = self.data.item_counts / max(self.data.item_counts.sum(), 1)
    self.genres = self.data.item_features.get("genres")
    self.genre_ids = self.data.vocabs.get("item_genres")
    self.blocked = self.item_ids(config.blocked)
    self.first_seen = self.data.item_features["first_seen"]
    # Users' stored histories, read per request: one reader for the bundle's life.
    self.histories = shards.TokenReader(self.data.layout)
    # Exploration reads the counts by item id; a shared store keys them by raw id.
    self.posteriors = posteriors.for_catalogue(self.item_raw)

  # ------------------------------------------------------------------------- request parsing

  def _histories(self, requests: list[Request]):
    """Per request: user id, the history tokens (stored + request), unknown request items."""
    user_ids = np.array([self.user_index.get(r.user_id, OOV) for r in requests])
    known = user_ids >= FIRST_ID
    stored = {}
    if known.any():
      stored = dict(zip(np.flatnonzero(known), self.histories.read(user_ids[known] - FIRST_ID)))
    out = []
    for i, request in enumerate(requests):
      tokens = stored.get(i, np.zeros(0, TOKEN_DTYPE))
      unknown = []
      if request.history:
        raw = np.array([item for item, _ in request.history], dtype=object)
        ids = self.item_ids(raw)
        unknown = [str(x) for x in raw[ids < FIRST_ID]]
        times = np.array([t for _, t in request.history], np.int64)[ids >= FIRST_ID]
        tokens = self._with_carried(tokens, ids[ids >= FIRST_ID], times, request.device)
      out.append((int(user_ids[i]), tokens, unknown))
    return out

  def _with_carried(self, stored: np.ndarray, items: np.ndarray, times: np.ndarray,
                    device: str | None) -> np.ndarray:
    """The stored tokens and the request's (item, time) pairs as one history in time order.

    A carried item becomes a token as the tokenizer would write an event of a log without event
    types or values (data/tabular.py): an interaction of value 1.0, one event, on the request's
    device, its hour and weekday from its time, its gap from the token before it.
    """
    extra = np.zeros(len(items), TOKEN_DTYPE)
    extra["item"], extra["timestamp"] = items, times
    extra["event"] = int(EventType.INTERACTION)
    extra["actions"] = 1 << int(EventType.INTERACTION)
    extra["count"], extra["value"] = 1, 1.0
    extra["device"] = self.devices.lookup(np.array([device]))[0] if device else 0
    extra["hour"], extra["weekday"] = hour_of_day(times), weekday_of(times)
    carried = np.concatenate([np.zeros(len(stored), bool), np.ones(len(extra), bool)])
    merged = np.concatenate([stored, extra])
    order = np.argsort(merged["timestamp"], kind="stable")
    merged, carried = merged[order], carried[order]
    gaps = np.diff(merged["timestamp"], prepend=merged["timestamp"][:1])
    merged["gap"] = np.where(carried, gap_bucket(gaps), merged["gap"])
    return merged

  def _context(self, request: Request, now: int) -> tuple[int, int, int]:
    """(device id, hour 1..24, weekday 1..7) of a request."""
    device = int(self.devices.lookup(np.array([request.device]))[0]) if request.device else 0
    hour = request.hour + 1 if request.hour is not None else hour_of_day(now)
    return device, hour, weekday_of(now)

  # ------------------------------------------------------------------------- the stages

  def _query_batch(self, resolved, contexts, now, size: int) -> dict:
    if not self.two_tower:
      return self.query_model.task.history_batch(
          [tokens for _, tokens, _ in resolved], [user for user, _, _ in resolved], size, now)
    # The two-tower's query tower: the user, the request's context, the history's items and times.
    length = self.max_len
    batch = {name: np.zeros((size, length), np.int32) for name in ("inputs", "device", "hour")}
    batch["timestamp"] = np.zeros((size, length), np.int64)
    batch["user"] = np.full(size, OOV, np.int32)
    for row, ((user, tokens, _), (device, hour, _)) in enumerate(zip(resolved, contexts)):
      recent = tokens[-length:]
      if len(recent):
        batch["inputs"][row, -len(recent):] = recent["item"]
        batch["timestamp"][row, -len(recent):] = recent["timestamp"]
      batch["user"][row] = user
      batch["device"][row] = device
      batch["hour"][row] = hour
    return batch

  def _ranking_batch(self, candidates: np.ndarray, resolved, contexts, now) -> dict:
    """One impression token per (request, candidate): [B * N] ranking rows."""
    b, n = candidates.shape
    tokens = np.zeros((b, n), TOKEN_DTYPE)
    tokens["item"] = candidates
    tokens["timestamp"] = np.asarray(now)[:, None]
    records = np.zeros(b, np.int64)
    for row, ((user, history, _), (device, hour, weekday)) in enumerate(zip(resolved, contexts)):
      tokens["device"][row], tokens["hour"][row], tokens["weekday"][row] = device, hour, weekday
      if len(history):
        tokens["locale"][row] = history["locale"][-1]
        tokens["gap"][row] = gap_bucket(np.array([now[row] - history["timestamp"][-1]]))[0]
      records[row] = max(user - FIRST_ID, 0)
    batch = self.features(tokens.reshape(-1), np.repeat(records, n))
    # An unknown user borrows nobody's features: the out-of-vocabulary id, unknown side features.
    unknown = np.repeat([user < FIRST_ID for user, _, _ in resolved], n)
    batch["sparse"]["user"] = np.where(unknown, OOV, batch["sparse"]["user"])
    for name in batch["sparse"]:
      if name.startswith("user_"):
        batch["sparse"][name] = np.where(unknown, 0, batch["sparse"][name])
    batch["dense"][unknown, 1] = 0.0
    if self.user_encoder is not None:  # the same feature as in training: history before now
      vectors = self.user_encoder.before([tokens for _, tokens, _ in resolved],
                                         [user for user, _, _ in resolved], now)
      batch["user_embedding"] = np.repeat(vectors, n, 0)
    return batch

  def _retrieval_scores(self, queries, candidates, cold) -> np.ndarray:
    """Without a ranker: each candidate's retrieval score (query · item), or on the cold-start
    path (no query to speak of) its share of the training interactions. [B, N, 1]."""
    scores = np.einsum("bd,bnd->bn", queries, self.vectors[candidates])
    cold = np.concatenate([cold, np.zeros(len(candidates) - len(cold), bool)])
    scores = np.where(cold[:, None], self.popularity[candidates], scores)
    return scores[..., None].astype(np.float32)

  def recommend(self, requests: list[Request]) -> list[dict]:
    """Answers a batch of requests (at most BUCKETS[-1])."""
    timings = {}
    started = clock = time.perf_counter()

    def lap(stage):
      nonlocal clock
      now = time.perf_counter()
      timings[stage] = timings.get(stage, 0.0) + 1000 * (now - clock)
      clock = now

    size = next(b for b in BUCKETS if b >= len(requests))
    now = [int(r.now if r.now is not None else time.time()) for r in requests]
    resolved = self._histories(requests)
    contexts = [self._context(r, t) for r, t in zip(requests, now)]
    lap("features")
    cold = np.array([user < FIRST_ID and not len(tokens) for user, tokens, _ in resolved])
    queries = np.asarray(self.query_vectors(self._query_batch(resolved, contexts, now, size)))
    # A cold row has no history to summarise (a sequence model's state over padding alone is not
    # a query): it searches with zeros, and its candidates come from popularity below.
    queries = np.where(np.pad(cold, (0, size - len(cold)))[:, None], 0.0, queries)
    lap("query")
    excluded = [set(tokens["item"].tolist()) | set(self.item_ids(r.exclude).tolist())
                for r, (_, tokens, _) in zip(requests, resolved)]
    depth = min(len(self.bundle.item_ids), self.num_candidates + max(len(e) for e in excluded))
    found, _ = self.bundle.search(queries[:len(requests)], depth)
    candidates = np.zeros((size, self.num_candidates), np.int32)
    for row, ids in enumerate(found):
      pool = self.popular if cold[row] else ids
      kept = pool[~np.isin(pool, list(excluded[row]))]
      if requests[row].genres:
        kept = kept[self._has_genre(kept, requests[row].genres)]
      kept = kept[:self.num_candidates]
      candidates[row, :len(kept)] = kept
    lap("retrieval")
    if self.ranker is not None:
      padded = resolved + [resolved[0]] * (size - len(requests))
      padded_contexts = contexts + [contexts[0]] * (size - len(requests))
      padded_now = now + [now[0]] * (size - len(requests))
      outputs = np.asarray(self.score(self._ranking_batch(candidates, padded, padded_contexts,
                                                          padded_now)))
      outputs = outputs.reshape(size, self.num_candidates, len(self.heads))
    else:
      outputs = self._retrieval_scores(queries, candidates, cold)
    lap("ranking")
    responses = []
    rng = np.random.default_rng()
    for row, request in enumerate(requests):
      valid = candidates[row] >= FIRST_ID
      items = candidates[row][valid]
      scores = outputs[row][valid]
      combined = sum(weight * scores[:, list(self.heads).index(head)]
                     for head, weight in self.policy.items())
      result = rerank(items, combined, self.vectors[items], request.k, self.config.rerank,
                      groups=self.genres[items, 0] if self.genres is not None else None,
                      ages=now[row] - self.first_seen[items], blocked=self.blocked,
                      posteriors=self.posteriors, rng=rng)
      responses.append({
          "items": [{"item_id": self.item_raw[item],
                     "score": float(combined[i]),
                     "heads": {head: float(scores[i, h]) for h, head in enumerate(self.heads)},
                     "stage": "popular" if cold[row] and stage == "ranking" else str(stage),
                     "propensity": float(p)}
                    for item, i, stage, p in zip(result.items, result.indices, result.stage,
                                                 result.propensity)],
          "unknown_history_items": resolved[row][2],
          "cold_start": bool(cold[row]),
          "model_version": self.version,
      })
    lap("rerank")
    total = 1000 * (time.perf_counter() - started)
    for response in responses:
      response["timings_ms"] = {**{k: round(v, 3) for k, v in timings.items()},
                                "total": round(total, 3)}
    return responses

  def unknown_genres(self, names: list[str]) -> list[str]:
    """The names a genre filter cannot use (all of them when the catalogue has no genres)."""
    known = set() if self.genre_ids is None else {str(g) for g in self.genre_ids.raw_ids}
    return [name for name in names if name not in known]

  def _has_genre(self, items: np.ndarray, names: list[str]) -> np.ndarray:
    wanted = self.genre_ids.lookup(np.array(names).astype(self.genre_ids.raw_ids.dtype))
    return np.isin(self.genres[items], wanted).any(1)

  def warm_up(self, max_batch: int = BUCKETS[-1]) -> None:
    """Compiles every batch size a batch of up to `max_batch` requests pads to, so no request
    waits for XLA (larger ones, never used, are not traced)."""
    for size in BUCKETS:
      self.recommend([Request(k=1)] * size)
      if size >= max_batch:
        break

  def similar(self, item_id: str, k: int) -> list[dict]:
    item = self.item_index.get(item_id)
    if item is None:
      raise KeyError(item_id)
    ids, scores = self.bundle.search(self.vectors[item][None], k + 1)
    return [{"item_id": self.item_raw[i], "score": float(s)}
            for i, s in zip(ids[0], scores[0]) if i != item][:k]

  def item_ids(self, raw) -> np.ndarray:
    """Raw item ids (strings) -> vocabulary ids, OOV for unknown ones."""
    return np.array([self.item_index.get(str(x), OOV) for x in raw], np.int64)
