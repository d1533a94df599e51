"""The item index serving searches, tuned to a recall target on queries it is then measured on.

`build_index(items, queries=...)` builds ScaNN trees and searches their search-time settings
(leaves searched, candidates re-scored exactly) from the cheapest upward, measuring recall@k
against exact search on *tuning* queries, and keeps the fastest setting that reaches
`target_recall`. The recall it promises is then measured on *held-out* queries that took no part
in the choice, with the per-query latency on one thread (`Retriever.tuning`).

Trees are tried cheapest to build first, the next while the best found is slower than 1/20 of
exact search: a plain tree, then one with SOAR spilling (each item in a second leaf). Both have
~2 sqrt(N) leaves with AVQ centres (see _structures for the measurements). Unit vectors get
spherical leaves. Un-normalised item vectors (sequential models, BPR) rank by true
inner product, where a query's top k holds long items from many leaves: the anisotropic
quantization threshold is scaled to the items' median norm, and AVQ leaf centres (then SOAR)
recover those items (the MIPS -> cosine augmentation measured worse; see _structures). ScaNN's own
`autopilot()` is built beside them and used where it reaches the target at least as fast.
Catalogues under EXACT_BELOW items are searched exactly. When no setting within the latency cap reaches the target, RecallNotMet says
the best recall found; `accept_recall` lowers the bar explicitly.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np

from jaxrec.errors import UserError
from jaxrec.retrieval.exact import exact_topk, recall_at_k, recall_per_query
from jaxrec.retrieval.searcher import (EXACT_BELOW, Retriever, ScannParams, autopilot_params,
                                       build_tree, choose_params, is_unit_norm, params_for)

__all__ = ["EXACT_BELOW", "Retriever", "ScannParams", "RecallNotMet", "build_index",
           "build_tree", "choose_params", "is_unit_norm", "params_for", "split_queries"]

TARGET_RECALL = 0.95
RECALL_K = 100
MAX_QUERIES = 1000  # tuning queries, and held-out queries, at most (each)
# Tuning asks the recall on its queries to clear the target by two standard errors (at least
# MARGIN): the held-out queries' recall wobbles around the tuning queries' by about that much.
MARGIN = 0.005
# Leaves searched, as shares of the tree's leaves, and candidates re-scored, as multiples of k
# (of RECALL_K when k is smaller):
# the ladders tuning climbs. Beyond half the leaves an index saves too little over exact search.
LEAF_SHARES = (0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.04, 0.05, 0.07, 0.1, 0.14, 0.2,
               0.3, 0.5)
REORDER_FACTORS = (1, 2, 3, 5, 10)
# The latency cap: a setting slower than this share of exact search's own per-query CPU time
# (batched, as measured for the reference top-k; or FLOOR_MS, whichever is larger) is not worth
# an approximate index.
SHARE_OF_EXACT = 0.5
FLOOR_MS = 1.0
# Trees are tried cheapest to build first, the next only while the best setting found is slower
# than this share of exact search (1/20: the "20x exact").
GOOD_ENOUGH_SHARE = 0.05
SOAR_LAMBDA = 1.5  # ScaNN's default spilling strength
# The trees' shape, measured on 1M x 128 log-normal-norm items (benchmarks/scann_vs_exact.py
# --families; 300 held-out queries, recall@100 at equal single-thread speed): 2 sqrt(N) leaves
# trained on 250k items beat sqrt(N) and 4 sqrt(N) (4000 leaves: 0.89 searching 280 of them);
# AVQ leaf centres (ScannParams.avq) with SOAR raised recall at 20 of 2000 leaves and 300
# re-scored from 0.89 (mean centres) to 0.93 (eta 2.5) and 0.94 (eta 8), at the same speed.
LEAVES_PER_SQRT = 2
MIN_LEAF_ITEMS = 200
TRAINING_SAMPLE = 250_000
AVQ_ETA = 8.0
TIMED_QUERIES = 200  # single-query latency is timed on this many tuning queries per setting


class RecallNotMet(UserError):
  """No index setting within the latency cap reaches the recall target."""


@dataclasses.dataclass
class Trial:
  structure: str
  leaves: int
  reorder: int
  recall: float
  se: float = 0.0  # standard error of `recall` over the queries
  latency_ms: float | None = None

  def meets(self, target: float) -> bool:
    """The recall clears `target` with its margin (two standard errors, at least MARGIN), or is
    exact."""
    return self.recall >= 1.0 or self.recall - max(MARGIN, 2 * self.se) >= target

  def to_json(self) -> dict:
    out = {"structure": self.structure, "num_leaves_to_search": self.leaves,
           "reorder": self.reorder, "recall": round(self.recall, 4), "se": round(self.se, 4)}
    if self.latency_ms is not None:
      out["latency_ms"] = round(self.latency_ms, 4)
    return out


def split_queries(queries: np.ndarray | None, items: np.ndarray,
                  seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
  """(tuning queries, held-out queries, source): the given queries shuffled and halved (up to
  MAX_QUERIES each), or, without any, two disjoint samples of item vectors."""
  rng = np.random.default_rng(seed)
  if queries is not None and len(queries) >= 2:
    order = rng.permutation(len(queries))
    half = min(len(queries) // 2, MAX_QUERIES)
    return queries[order[half:2 * half]], queries[order[:half]], "held_out_queries"
  count = min(MAX_QUERIES, len(items) // 2)
  rows = rng.choice(len(items), 2 * count, replace=False)
  return items[rows[count:]], items[rows[:count]], "item_sample"


def build_index(items: np.ndarray, params: ScannParams | None = None, *,
                queries: np.ndarray | None = None, target_recall: float = TARGET_RECALL,
                recall_k: int = RECALL_K, accept_recall: float | None = None,
                max_latency_ms: float | None = None, autopilot: bool = True,
                seed: int = 0) -> Retriever:
  """Indexes `items` [N, D]: as `params` say when given, else tuned to `target_recall` of
  recall@`recall_k` on `queries` [Q, D] (default: a sample of item vectors); the report, with
  the recall measured on held-out queries, is `retriever.tuning`.

  Raises RecallNotMet when no setting within `max_latency_ms` per query (default: half of exact
  search's, at least FLOOR_MS) reaches the target, unless one reaches `accept_recall`.
  """
  if params is not None:
    return build_tree(items, params)
  items = np.ascontiguousarray(items, np.float32)
  _check_targets(target_recall, recall_k, accept_recall)
  started = time.perf_counter()
  tuning, held_out, source = split_queries(queries, items, seed)
  if len(items) < EXACT_BELOW:
    retriever = build_tree(items, ScannParams(exact=True))
    retriever.tuning = _report(retriever, held_out, tuning, source, target_recall, recall_k,
                               accept_recall, [], None, started)
    return retriever
  k = min(recall_k, len(items))
  # Exact search's cost per query, batched, in CPU time (every BLAS thread's): the reference the
  # latency cap and the "good enough" rule compare with.
  cpu_started = time.process_time()
  exact_ids = exact_topk(items, np.concatenate([tuning, held_out]), k)[0]
  exact_ms = (time.process_time() - cpu_started) * 1000 / len(exact_ids)
  tuning_ids, held_out_ids = exact_ids[:len(tuning)], exact_ids[len(tuning):]
  cap_ms = max_latency_ms or max(SHARE_OF_EXACT * exact_ms, FLOOR_MS)

  best, trials = None, []  # best: (Trial, Retriever) meeting the target, fastest
  fallback = None  # the highest-recall trial within the cap, for accept_recall
  for name, structure in _structures(items):
    if best is not None and best[0].latency_ms <= GOOD_ENOUGH_SHARE * exact_ms:
      break
    retriever = build_tree(items, structure)
    found = _climb(retriever, name, tuning, tuning_ids, k, target_recall, trials)
    for trial in found:
      if trial.latency_ms > cap_ms:
        continue
      if trial.meets(target_recall) and (best is None or trial.latency_ms < best[0].latency_ms):
        best = (trial, retriever)
      if fallback is None or trial.recall > fallback[0].recall:
        fallback = (trial, retriever)
    del retriever  # the losers' searchers (each a copy of the items) are freed as we go
  if autopilot:
    best = _autopilot(items, tuning, tuning_ids, k, target_recall, cap_ms, trials, best)

  if best is None:
    floor = accept_recall if accept_recall is not None else None
    if fallback is None or floor is None or fallback[0].recall < floor:
      raise RecallNotMet(_not_met(trials, target_recall, recall_k, cap_ms, exact_ms, floor))
    best = fallback
  trial, retriever = best
  retriever.params = dataclasses.replace(retriever.params, num_leaves_to_search=trial.leaves,
                                         reorder=trial.reorder)
  retriever.tuning = _report(retriever, held_out, tuning, source, target_recall, recall_k,
                             accept_recall, trials, {"exact_ms": exact_ms, "cap_ms": cap_ms,
                                                     "chosen": trial, "ids": held_out_ids},
                             started)
  return retriever


def _check_targets(target: float, k: int, accept: float | None) -> None:
  if not 0 < target <= 1:
    raise UserError(f"target_recall must be in (0, 1], got {target}.")
  if k < 1:
    raise UserError(f"recall_k must be at least 1, got {k}.")
  if accept is not None and not 0 < accept <= target:
    raise UserError(f"accept_recall must be in (0, target_recall={target}], got {accept}: it "
                    "lowers the target, it cannot raise it.")


def _structures(items: np.ndarray):
  """(name, ScannParams) trees to tune, cheapest to build first; their search settings are
  placeholders."""
  n, dim = items.shape
  base = ScannParams(num_leaves=_num_leaves(n), num_leaves_to_search=1,
                     training_sample_size=min(n, TRAINING_SAMPLE),
                     dims_per_block=min(2, dim), reorder=RECALL_K, avq=AVQ_ETA)
  if is_unit_norm(items):
    base = dataclasses.replace(base, spherical=True)
    yield "spherical tree", base
    yield "spherical tree + SOAR", dataclasses.replace(base, soar_lambda=SOAR_LAMBDA)
    return
  # The threshold is in the items' units (ScaNN's eta = (d-1) T^2/|x|^2 / (1 - T^2/|x|^2)):
  # 0.2 suits unit vectors, so it scales with the typical norm. (0.35 and 0.5 x the median norm
  # measured no better at 1M x 128: the leaves, not the codes, limited recall there.)
  median = float(np.median(np.linalg.norm(items[:100_000], axis=1)))
  base = dataclasses.replace(base, anisotropic_quantization_threshold=round(0.2 * median, 6))
  yield "anisotropic tree", base
  # Items of varied norms: a query's top k holds long items from many leaves, which a second
  # leaf per item (SOAR) finds far more cheaply than searching more leaves. The MIPS -> cosine
  # augmentation (ScannParams.augment) measured worse on 1M x 128 log-normal-norm items, 50
  # leaves of 1000 searched, 500 re-scored: recall@100 0.60 against 0.82 for this tree without
  # SOAR and 0.91 with it, so tuning does not try it.
  yield "anisotropic tree + SOAR", dataclasses.replace(base, soar_lambda=SOAR_LAMBDA)


def _num_leaves(n: int) -> int:
  """~2 sqrt(n) leaves, but at least ~MIN_LEAF_ITEMS items each (and never fewer than sqrt(n)):
  a leaf's AVQ centre and its share of the quantizer's training need items."""
  return max(1, round(math.sqrt(n)), min(round(LEAVES_PER_SQRT * math.sqrt(n)),
                                         n // MIN_LEAF_ITEMS))


def _climb(retriever: Retriever, name: str, queries: np.ndarray, exact_ids: np.ndarray, k: int,
           target: float, trials: list[Trial]) -> list[Trial]:
  """For each reorder (ascending), the fewest leaves that meet `target` on `queries`, found by
  bisection (recall grows with leaves), each timed; appended to `trials` and returned."""
  num_leaves = retriever.params.num_leaves
  ladder = sorted({min(num_leaves, max(1, round(s * num_leaves))) for s in LEAF_SHARES})
  found, top = [], len(ladder) - 1
  reorders = sorted({min(retriever.num_items, f * max(k, RECALL_K)) for f in REORDER_FACTORS})
  for reorder in reorders:
    def recall(i):
      rows, _ = retriever.approximate(queries, k, ladder[i], reorder)
      trial = Trial(name, ladder[i], reorder, *_recall(rows, exact_ids, k))
      trials.append(trial)
      return trial
    lo, hi, hit = 0, top, None
    while lo <= hi:
      mid = (lo + hi) // 2
      trial = recall(mid)
      if trial.meets(target):
        hit, hi = trial, mid - 1
      else:
        lo = mid + 1
    if hit is None:  # not even at the top of the ladder: report the best seen, timed
      hit = max((t for t in trials if t.structure == name and t.reorder == reorder),
                key=lambda t: t.recall)
    else:
      top = ladder.index(hit.leaves)  # more candidates re-scored never needs more leaves
      if top > 0 and ladder[top] - ladder[top - 1] > 1:  # halfway down the last ladder step
        leaves = (ladder[top - 1] + ladder[top]) // 2
        rows, _ = retriever.approximate(queries, k, leaves, reorder)
        halfway = Trial(name, leaves, reorder, *_recall(rows, exact_ids, k))
        trials.append(halfway)
        if halfway.meets(target):
          hit = halfway
    hit.latency_ms = _latency_ms(retriever, queries[:TIMED_QUERIES], k, hit.leaves, hit.reorder)
    found.append(hit)  # no early stop: more re-scored can need far fewer leaves, and be faster
  return found


def _recall(rows: np.ndarray, exact_ids: np.ndarray, k: int) -> tuple[float, float]:
  """(recall@k, its standard error over the queries)."""
  per_query = recall_per_query(rows, exact_ids, k)
  return float(per_query.mean()), float(per_query.std() / math.sqrt(max(len(per_query), 1)))


def _autopilot(items, queries, exact_ids, k, target, cap_ms, trials, best):
  """ScaNN's autopilot() with its own search settings: it replaces `best` where it reaches the
  target at least as fast."""
  params = autopilot_params(*items.shape)
  if params is None:  # autopilot would brute-force this catalogue
    return best
  retriever = build_tree(items, params)
  rows, _ = retriever.approximate(queries, k, params.num_leaves_to_search, params.reorder)
  trial = Trial("autopilot", params.num_leaves_to_search, params.reorder,
                *_recall(rows, exact_ids, k),
                _latency_ms(retriever, queries[:TIMED_QUERIES], k, params.num_leaves_to_search,
                            params.reorder))
  trials.append(trial)
  if trial.meets(target) and trial.latency_ms <= cap_ms and (
      best is None or trial.latency_ms <= best[0].latency_ms):
    return trial, retriever
  return best


def _latency_ms(retriever: Retriever, queries: np.ndarray, k: int, leaves: int,
                reorder: int) -> float:
  """Median-of-3 CPU milliseconds per query, one query per call on one thread (as serving asks).

  CPU time, not wall time: on a shared machine wall time measures the neighbours' load.
  """
  rounds = []
  for _ in range(3):
    started = time.process_time()
    for i in range(len(queries)):
      retriever.approximate(queries[i:i + 1], k, leaves, reorder)
    rounds.append((time.process_time() - started) * 1000 / max(len(queries), 1))
  return float(np.median(rounds))


def _not_met(trials, target, k, cap_ms, exact_ms, floor) -> str:
  within = [t for t in trials if t.latency_ms is not None and t.latency_ms <= cap_ms]
  best_within = max(within, key=lambda t: t.recall, default=None)
  best_any = max(trials, key=lambda t: t.recall, default=None)

  def describe(t):
    timed = f", {t.latency_ms:.3f} ms/query" if t.latency_ms is not None else ""
    return (f"recall@{k} {t.recall:.4f} ({t.structure}, {t.leaves} leaves searched, "
            f"{t.reorder} re-scored{timed})")
  found = describe(best_within) if best_within else "none within the cap"
  message = (f"no index setting reaches recall@{k} {target} within the latency cap of "
             f"{cap_ms:.3f} ms/query (exact search: {exact_ms:.3f} CPU-ms/query). Best within the "
             f"cap: {found}")
  if best_any and best_any is not best_within:
    message += f"; best at any speed tried: {describe(best_any)}"
  if floor is not None:
    message += f"; below the accepted {floor}"
  return message + (". Lower the target explicitly (--accept-recall R, at most the best found), "
                    "raise the cap (max_latency_ms), or search exactly (--exact).")


def _report(retriever, held_out, tuning, source, target, k, accept, trials, chosen,
            started) -> dict:
  """The manifest's account of the index: recall on held-out queries, what tuning tried."""
  k = min(k, retriever.num_items)
  report = {"target_recall": target, "recall_k": k, "accept_recall": accept,
            "query_source": source, "tuning_queries": int(len(tuning)),
            "held_out_queries": int(len(held_out))}
  if chosen is None:  # exact search: nothing to tune
    return {**report, "held_out_recall": 1.0, "held_out_recall_at_10": 1.0, "target_met": True,
            "trials": [],
            "tuning_seconds": round(time.perf_counter() - started, 3)}
  rows, _ = retriever.search(held_out, k)
  held = recall_at_k(rows, chosen["ids"], k)
  report["held_out_recall_at_10"] = round(recall_at_k(rows, chosen["ids"], min(10, k)), 4)
  latency = _latency_ms(retriever, held_out[:TIMED_QUERIES], k,
                        retriever.params.num_leaves_to_search, retriever.params.reorder)
  return {**report, "chosen": chosen["chosen"].to_json(),
          "tuning_recall": round(chosen["chosen"].recall, 4), "held_out_recall": round(held, 4),
          "target_met": bool(held >= target),
          "latency_ms_per_query": round(latency, 4),
          "exact_latency_ms_per_query": round(chosen["exact_ms"], 4),
          "latency_cap_ms": round(chosen["cap_ms"], 4),
          "trials": [t.to_json() for t in trials],
          "tuning_seconds": round(time.perf_counter() - started, 3)}
