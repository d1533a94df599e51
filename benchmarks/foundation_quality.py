"""The foundation model against jaxrec's SASRec on MovieLens-100K, same protocol, same run.

    python benchmarks/foundation_quality.py [--seeds 3] [--foundation-overrides k=v ...]

Leave-one-out by time, full ranking over all 1682 items with each user's earlier items excluded,
best validation checkpoint; both models trained with the same seeds (configs/movielens_sasrec.py
and configs/movielens_foundation.py as they are, overrides only where given). Runs alternate
(foundation, SASRec, next seed) and each finished run is written at once, so an interrupted
benchmark still leaves paired results. The issue's bar: foundation test NDCG@10 (mean of the
seeds) >= 1.05 x SASRec's. Writes benchmarks/results/foundation_quality.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, print_table, train_movielens, write_result  # noqa: E402

KEYS = ["ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20"]
BAR = 1.05


def summarise(results: list[dict]) -> dict:
  tests = [r["test"] for r in results]
  return {"mean": {k: float(np.mean([t[k] for t in tests])) for k in KEYS},
          "std": {k: float(np.std([t[k] for t in tests])) for k in KEYS},
          "seeds": len(tests), "test_ndcg@10": [t["ndcg@10"] for t in tests],
          "valid_ndcg@10": [r["valid"]["ndcg@10"] for r in results],
          "best_step": [r["best_step"] for r in results],
          "seconds": [r["seconds"] for r in results]}


def report(runs: dict[str, list[dict]], overrides: list[str], complete: bool) -> dict:
  summary = {name: summarise(results) for name, results in runs.items() if results}
  paired = min(len(r) for r in runs.values())
  out = {"protocol": next(r[0]["protocol"] for r in runs.values() if r), "models": summary,
         "foundation_overrides": overrides, "complete": complete, "bar": BAR}
  if paired:
    means = {n: float(np.mean([r["test"]["ndcg@10"] for r in runs[n][:paired]])) for n in runs}
    out["paired_seeds"] = paired
    out["ratio_ndcg@10"] = means["foundation"] / means["sasrec"]
    out["bar_met"] = complete and out["ratio_ndcg@10"] >= BAR
  write_result("foundation_quality", out)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--data", default=os.path.join(ROOT, "data", "movielens-100k"))
  parser.add_argument("--foundation-overrides", nargs="*", default=[])
  args = parser.parse_args()
  runs: dict[str, list[dict]] = {"foundation": [], "sasrec": []}
  with tempfile.TemporaryDirectory() as tmp:
    for seed in range(args.seeds):
      for name in runs:
        extra = args.foundation_overrides if name == "foundation" else []
        results = train_movielens(name, [f"seed={seed}", f"data.dir={args.data}", *extra],
                                  os.path.join(tmp, f"{name}-{seed}"))
        runs[name].append(results)
        print(f"{name} seed {seed}: valid ndcg@10 {results['valid']['ndcg@10']:.4f}, test "
              f"ndcg@10 {results['test']['ndcg@10']:.4f} ({results['seconds']:.0f} s, best step "
              f"{results['best_step']})", flush=True)
        out = report(runs, args.foundation_overrides, complete=False)
  out = report(runs, args.foundation_overrides, complete=True)

  rows = []
  for name, label in (("foundation", "jaxrec foundation"), ("sasrec", "jaxrec SASRec")):
    s = out["models"][name]
    rows.append([f"{label} ({s['seeds']} seeds)"]
                + [f"{s['mean'][k]:.4f}±{s['std'][k]:.4f}" for k in KEYS])
  print(f"\nMovieLens-100K, {out['protocol']}\n")
  print_table(["model"] + KEYS, rows)
  print(f"\nfoundation / SASRec test NDCG@10: {out['ratio_ndcg@10']:.3f} (bar {BAR}: "
        f"{'met' if out['bar_met'] else 'not met'})")
  print(f"wrote {os.path.join('benchmarks', 'results', 'foundation_quality.json')}")


if __name__ == "__main__":
  main()
