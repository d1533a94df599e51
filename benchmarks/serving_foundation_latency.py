"""Serving latency with the foundation model as the query encoder, beside the two-tower's, on
MovieLens-100K: the same DLRM ranker, load and users for both.

    python benchmarks/serving_foundation_latency.py [--rate 50] [--duration 30] [--rounds 2]

Trains (once, into --workdir) the two-tower, the foundation model and the DLRM from their
MovieLens configs as committed (model sizes unchanged: the foundation model reads 100 tokens of
every field through 2 blocks of width 64), each for --steps steps: latency does not depend on how
well a model is trained, so they are not trained to convergence. Exports three bundles
(two-tower + DLRM, foundation + DLRM, foundation alone: retrieval score then re-ranking), starts
`jaxrec serve` on each in turn in its own process and drives it with serving/loadtest.py at a
fixed rate (latency from each request's intended send time), random known users, N = 1000
candidates (of 1,682 items), k = 20, MMR re-ranking. The bundles take turns for --rounds rounds,
so a change in the shared machine's load falls on all of them. The per-stage means come from
the server's own /metrics. A second table times the query encoder alone in this process (the
jitted query over a batch of real users' histories built as serving builds it, median of
--calls calls per batch size), which the machine's load disturbs less than the end-to-end tail.
Writes benchmarks/results/serving_foundation_latency.json.
"""

from __future__ import annotations

import argparse
import os
import random
import re
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, print_table, train_config, write_result  # noqa: E402

sys.path.insert(0, ROOT)
import httpx  # noqa: E402

from serving import loadtest  # noqa: E402
from serving.process import running_server  # noqa: E402

DATA = os.path.join(ROOT, "data", "movielens-100k")
MODELS = {"two_tower": "movielens_two_tower.py", "foundation": "movielens_foundation.py",
          "dlrm": "movielens_dlrm.py"}
# name -> (query encoder workdir, ranker workdir or None)
BUNDLES = {"two-tower + DLRM": ("two_tower", "dlrm"), "foundation + DLRM": ("foundation", "dlrm"),
           "foundation, no ranker": ("foundation", None)}
ENCODERS = {"two-tower": "two-tower + DLRM", "foundation": "foundation, no ranker"}
STAGES = ("features", "query", "retrieval", "ranking", "rerank")


def build_bundles(workdir: str, steps: int) -> dict[str, str]:
  """Each bundle's export root (one version in each), trained and exported on first use."""
  from jaxrec.train.export import export_workdir
  for name, config in MODELS.items():
    if not os.path.exists(os.path.join(workdir, name, "results.json")):
      train_config(config, [f"data.dir={DATA}", f"train.num_steps={steps}",
                            f"train.eval_every={steps}"], os.path.join(workdir, name))
  roots = {}
  for label, (query, ranker) in BUNDLES.items():
    root = os.path.join(workdir, "export-" + re.sub(r"\W+", "-", label).strip("-"))
    if not (os.path.isdir(root) and os.listdir(root)):
      export_workdir(os.path.join(workdir, query), root,
                     ranker=os.path.join(workdir, ranker) if ranker else None)
    roots[label] = root
  return roots


def stage_totals(base: str) -> dict[str, tuple[float, float]]:
  """(seconds, requests) so far of each pipeline stage, from the server's Prometheus histogram."""
  text = httpx.get(base + "/metrics", timeout=10).text
  found = lambda kind: dict(re.findall(
      rf'jaxrec_stage_seconds_{kind}{{stage="(\w+)"}} (\S+)', text))
  sums, counts = found("sum"), found("count")
  return {stage: (float(sums[stage]), float(counts[stage])) for stage in sums}


def stage_means(before: dict, after: dict) -> dict[str, float]:
  """Mean ms per request of each stage over the requests answered between two readings."""
  return {stage: round(1000 * (s - before.get(stage, (0, 0))[0]) /
                       (n - before.get(stage, (0, 0))[1]), 3)
          for stage, (s, n) in after.items() if n > before.get(stage, (0, 0))[1]}


def encoder_ms(roots: dict[str, str], raw_users: list[str], calls: int) -> dict:
  """Median ms of the query encoder (batch built + jitted query) at serving's batch sizes 1 and
  8, the bundles taking turns call by call."""
  import time

  import numpy as np

  from jaxrec.rerank.posteriors import BetaPosteriors
  from jaxrec.serve.recommender import Recommender, Request, ServingConfig
  encoders = {name: Recommender(os.path.join(roots[label], "1"), ServingConfig(),
                                BetaPosteriors(0)) for name, label in ENCODERS.items()}
  rng = random.Random(1)
  timings = {(name, size): [] for name in encoders for size in (1, 8)}
  for call in range(calls + 1):  # the first round compiles: not timed
    for size in (1, 8):
      requests = [Request(user_id=rng.choice(raw_users)) for _ in range(size)]
      for name, rec in encoders.items():
        resolved = rec._histories(requests)
        now = [int(time.time())] * size
        contexts = [rec._context(r, t) for r, t in zip(requests, now)]
        started = time.perf_counter()
        np.asarray(rec.query_vectors(rec._query_batch(resolved, contexts, now, size)))
        if call:
          timings[name, size].append(1000 * (time.perf_counter() - started))
  return {f"{name} @ batch {size}": round(float(np.median(t)), 3)
          for (name, size), t in timings.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", default=os.path.join(ROOT, "workdirs", "serving-foundation"))
  parser.add_argument("--rate", type=float, default=50)
  parser.add_argument("--duration", type=float, default=30)
  parser.add_argument("--steps", type=int, default=300)
  parser.add_argument("--rounds", type=int, default=2)
  parser.add_argument("--calls", type=int, default=200)
  args = parser.parse_args()
  roots = build_bundles(args.workdir, args.steps)
  from jaxrec.data.storage import PreparedDataset
  raw_users = [str(u) for u in PreparedDataset(DATA).vocabs["user"].raw_ids]
  results = {label: [] for label in roots}
  for _ in range(args.rounds):
    for label, root in roots.items():
      rng = random.Random(0)  # the same users, in the same order, for every bundle
      payloads = lambda: {"user_id": rng.choice(raw_users), "k": 20,
                          "context": {"device": "web", "hour": rng.randrange(24)}}
      with running_server(root) as base:
        url = base + "/v1/recommend"
        loadtest.run(url, 20, 10, payloads)  # warm the server's caches and the connection pool
        before = stage_totals(base)
        steady = loadtest.run(url, args.rate, args.duration, payloads, warmup=5).to_dict()
        steady["stage_mean_ms"] = stage_means(before, stage_totals(base))
        steady["load_average_1min"] = os.getloadavg()[0]
      results[label].append(steady)
  keys = ["achieved_rate", "p50_ms", "p95_ms", "p99_ms", "max_ms", "error_count"]
  print(f"\nserving latency, MovieLens-100K (1,682 items), N=1000 candidates, k=20, "
        f"{args.rate:g} req/s x {args.duration:g} s, {os.cpu_count()} cores shared by the "
        "server and the load generator")
  print_table(["query encoder", "round", *keys, *[f"{s} ms" for s in STAGES], "load avg"], [
      [label, n + 1, *[_fmt(r.get(k)) for k in keys],
       *[_fmt(r["stage_mean_ms"].get(s)) for s in STAGES], _fmt(r["load_average_1min"])]
      for label, runs in results.items() for n, r in enumerate(runs)])
  encoder = encoder_ms(roots, raw_users, args.calls)
  print(f"\nquery encoder alone (batch built + jitted query), median of {args.calls} calls, ms")
  print_table(["query encoder @ batch", "ms"], [[k, f"{v:.2f}"] for k, v in encoder.items()])
  print("wrote", write_result("serving_foundation_latency", {
      "rate": args.rate, "duration": args.duration, "rounds": args.rounds,
      "train_steps": args.steps,
      "dataset": "MovieLens-100K", "candidates": 1000, "k": 20, "bundles": results,
      "query_encoder_median_ms": encoder, "encoder_calls": args.calls,
      "note": "latency percentiles over the measured window; stage means (the server's own "
              "timings, per request) over the measured window and its 5 s warm-up"}))


def _fmt(value) -> str:
  if isinstance(value, float):
    return f"{value:.1f}"
  return "-" if value is None else str(value)


if __name__ == "__main__":
  main()
