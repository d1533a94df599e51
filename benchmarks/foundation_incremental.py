"""Incremental training: a warm start on +10% new data against a full retrain, in one run.

    python benchmarks/foundation_incremental.py [--models sasrec,foundation] [--seeds 1]

MovieLens-100K is cut at the time T of its 90% event quantile: the snapshot before T is what an
earlier run trained on; the whole log (T' = its end) is today's data, with new users, new items
and 10% new events. Both are prepared on their own (ids renumbered), leave-one-out by time.

  full retrain   the config's run on today's data from scratch (timed)
  earlier run    the same config on the snapshot before T (not timed: it exists already)
  incremental    `--init-from` the earlier run on today's data, training targets only after T
                 (train.new_data_only; the history before T stays input), a short schedule (timed)

Both are evaluated on today's test users (each user's last token), full ranking over every item
with the user's earlier items excluded, best validation checkpoint. The issue's bar: incremental
NDCG@10 >= 98% of the full retrain's in <= 25% of its wall-clock time (compilation, evaluations and
checkpoints included in both). Writes benchmarks/results/foundation_incremental.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, train_config, write_result  # noqa: E402

from jaxrec.data.movielens import load_movielens_100k  # noqa: E402
from jaxrec.data.prepare import prepare  # noqa: E402
from jaxrec.data.snapshot import snapshot, time_at_quantile  # noqa: E402

QUANTILE = 0.9
# The warm start's schedule: few steps over the new data's users, a short warm-up.
INCREMENTAL = {"sasrec": ["train.num_steps=60", "train.eval_every=15", "optimizer.warmup_steps=5",
                          "optimizer.learning_rate=1e-3"],
               "foundation": ["train.num_steps=60", "train.eval_every=15",
                              "optimizer.warmup_steps=5", "optimizer.learning_rate=1e-3"]}


def timed(config: str, overrides: list[str], workdir: str) -> dict:
  """train_config, plus this process's CPU seconds: on a shared machine the wall clock also
  counts other people's jobs, CPU time does not."""
  cpu = time.process_time()
  results = train_config(config, overrides, workdir)
  results["cpu_seconds"] = time.process_time() - cpu
  return results


def run_model(name: str, seed: int, old_dir: str, new_dir: str, tmp: str,
              incremental: list[str]) -> dict:
  config = f"movielens_{name}.py"
  common = [f"seed={seed}"]
  full = timed(config, [*common, f"data.dir={new_dir}"], os.path.join(tmp, "full"))
  print(f"{name} seed {seed}: full retrain test ndcg@10 {full['test']['ndcg@10']:.4f} "
        f"in {full['seconds']:.0f} s", flush=True)
  earlier_dir = os.path.join(tmp, "earlier")
  earlier = timed(config, [*common, f"data.dir={old_dir}"], earlier_dir)
  print(f"{name} seed {seed}: earlier run (before T) in {earlier['seconds']:.0f} s", flush=True)
  warm_dir = os.path.join(tmp, "incremental")
  warm = timed(config, [*common, f"data.dir={new_dir}", f"train.init_from={earlier_dir}",
                        *incremental], warm_dir)
  with open(os.path.join(warm_dir, "warm_start.json")) as f:
    warm_start = json.load(f)
  print(f"{name} seed {seed}: incremental test ndcg@10 {warm['test']['ndcg@10']:.4f} "
        f"in {warm['seconds']:.0f} s", flush=True)
  return {"full": _row(full), "earlier": _row(earlier), "incremental": _row(warm),
          "warm_start": warm_start, "incremental_overrides": incremental,
          "quality_ratio": warm["test"]["ndcg@10"] / full["test"]["ndcg@10"],
          "time_ratio": warm["seconds"] / full["seconds"],
          "cpu_time_ratio": warm["cpu_seconds"] / full["cpu_seconds"]}


def _row(results: dict) -> dict:
  return {"test": results["test"], "valid_ndcg@10": results["valid"]["ndcg@10"],
          "seconds": round(results["seconds"], 1),
          "cpu_seconds": round(results["cpu_seconds"], 1), "best_step": results["best_step"],
          "last_step": results["last_step"]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default="sasrec,foundation")
  parser.add_argument("--seeds", type=int, default=1)
  args = parser.parse_args()
  raw = load_movielens_100k(None)
  cut = time_at_quantile(raw, QUANTILE)
  results = {"cut_time": cut, "quantile": QUANTILE, "models": {}}
  rows = []
  with tempfile.TemporaryDirectory() as tmp:
    old_dir, new_dir = os.path.join(tmp, "before-T"), os.path.join(tmp, "today")
    old, new = prepare(snapshot(raw, cut), old_dir), prepare(raw, new_dir)
    results["data"] = {"before_T": old.stats["split_tokens"], "today": new.stats["split_tokens"],
                       "items": [old.stats["items"], new.stats["items"]],
                       "users": [old.stats["users"], new.stats["users"]]}
    for name in args.models.split(","):
      runs = []
      for seed in range(args.seeds):
        work = os.path.join(tmp, f"{name}-{seed}")
        runs.append(run_model(name, seed, old_dir, new_dir, work, INCREMENTAL[name]))
      mean = lambda f: float(np.mean([f(r) for r in runs]))
      summary = {
          "runs": runs,
          "full_ndcg@10": mean(lambda r: r["full"]["test"]["ndcg@10"]),
          "incremental_ndcg@10": mean(lambda r: r["incremental"]["test"]["ndcg@10"]),
          "full_seconds": mean(lambda r: r["full"]["seconds"]),
          "incremental_seconds": mean(lambda r: r["incremental"]["seconds"]),
          "earlier_seconds": mean(lambda r: r["earlier"]["seconds"]),
          "cpu_time_ratio": mean(lambda r: r["cpu_time_ratio"])}
      summary["quality_ratio"] = summary["incremental_ndcg@10"] / summary["full_ndcg@10"]
      summary["time_ratio"] = summary["incremental_seconds"] / summary["full_seconds"]
      summary["bar_met"] = summary["quality_ratio"] >= 0.98 and summary["time_ratio"] <= 0.25
      results["models"][name] = summary
      rows.append([name, str(args.seeds), f"{summary['full_ndcg@10']:.4f}",
                   f"{summary['full_seconds']:.0f}", f"{summary['incremental_ndcg@10']:.4f}",
                   f"{summary['incremental_seconds']:.0f}", f"{summary['quality_ratio']:.1%}",
                   f"{summary['time_ratio']:.1%}", f"{summary['cpu_time_ratio']:.1%}",
                   "yes" if summary["bar_met"] else "no"])
  print(f"\nMovieLens-100K cut at its {QUANTILE:.0%} event time; test NDCG@10 of today's users, "
        "full ranking\n")
  print_table(["model", "seeds", "full retrain NDCG@10", "s", "incremental NDCG@10", "s",
               "quality (>= 98%)", "time (<= 25%)", "CPU time", "bar met"], rows)
  path = write_result("foundation_incremental", results)
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
