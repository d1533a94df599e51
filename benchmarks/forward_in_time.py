"""Forward in time on MovieLens-100K: learned models against the trending list, in one run.

    python benchmarks/forward_in_time.py [--seeds 3] [--models sasrec,foundation]

Protocol: a global temporal split at the 0.8 / 0.9 event-time quantiles (train before the first
cut-off, validate on the window between them, test after the second); every interaction in a
user's evaluation window is a target (`eval.max_targets=0`), each user's earlier items excluded,
users with and without a history before the cut-off reported separately as well as overall.
Every row is selected on validation only: the baselines' window / half-life from their grid
(configs/movielens_{recent,decayed}_popularity.py), the models' checkpoint by validation
NDCG@10.

Models: SASRec and the foundation model with the trend prior (`model.trend_window_days=14`,
`loss.exclude_watched=True`, 630 steps; the foundation model also reads the request gap itself,
`model.request_gap=True`; docs/training.md), `--seeds` seeds each (SASRec without the prior
scored 0.257 here: docs/benchmarks.md). Every run's workdir is kept under
data/forward_in_time/<name>-s<seed>/ and reused when its results.json is there and its config is
the one asked for (a killed run resumes), so a rerun trains only what is missing. Writes
benchmarks/results/forward_in_time.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, print_table, write_result  # noqa: E402

RUNS = os.path.join(ROOT, "data", "forward_in_time")
DATA = ["data.split=temporal", "data.split_times=0.8,0.9", "eval.max_targets=0"]
TREND = ["model.trend_window_days=14", "loss.exclude_watched=True", "train.eval_every=35"]
# (row name, config, overrides, trained with seeds)
ENTRIES = [
    ("popularity", "popularity", [], False),
    ("recent popularity", "recent_popularity", [], False),
    ("decayed popularity", "decayed_popularity", [], False),
    ("sasrec", "sasrec", TREND + ["train.num_steps=630"], True),
    ("foundation", "foundation", TREND + ["model.request_gap=True", "train.num_steps=630"], True),
]
REFERENCE = "recent popularity"
PARTS = {"overall": "", "with history": "with_history/", "no history": "no_history/"}


def comparable(config: dict) -> dict:
  config = json.loads(json.dumps(config))
  config.get("data", {}).pop("dir", None)
  return config


def run(config_name: str, overrides: list[str], seed: int, name: str, data_dir: str) -> dict:
  """One run's results.json, trained into its workdir unless there already under this config."""
  from jaxrec.config import apply_overrides, config_json, load_config
  from jaxrec.train.trainer import train
  config = apply_overrides(load_config(os.path.join(ROOT, "configs",
                                                    f"movielens_{config_name}.py")),
                           [f"seed={seed}", f"data.dir={data_dir}", *DATA, *overrides])
  workdir = os.path.join(RUNS, f"{name.replace(' ', '_')}-s{seed}")
  done = os.path.join(workdir, "results.json")
  if os.path.exists(done):
    with open(os.path.join(workdir, "config.json")) as f:
      if comparable(json.load(f)) == comparable(json.loads(config_json(config))):
        with open(done) as f:
          return json.load(f)
    raise SystemExit(f"{workdir} holds a finished run under another config: move it away "
                     "to rerun")
  print(f"{name} seed {seed}: training in {workdir}", flush=True)
  return train(config, workdir)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--models", default="sasrec,foundation",
                      help="the models trained with --seeds seeds (the baselines always run)")
  parser.add_argument("--data", default=os.path.join(ROOT, "data", "movielens-100k-temporal"))
  args = parser.parse_args()
  chosen = set(args.models.split(","))
  results: dict[str, list[dict]] = {}
  for name, config_name, overrides, seeded in ENTRIES:
    if seeded and name not in chosen:
      continue
    seeds = range(args.seeds) if seeded else [0]
    results[name] = [run(config_name, overrides, s, name, args.data) for s in seeds]

  reference = results[REFERENCE][0]["test"]
  rows, summary = [], {}
  for name, runs in results.items():
    entry = {"seeds": len(runs), "best_step": [r.get("best_step") for r in runs],
             "selection": runs[0].get("selection")}
    cells = []
    for part, prefix in PARTS.items():
      tests = [r["test"][f"{prefix}ndcg@10"] for r in runs]
      valids = [r["valid"][f"{prefix}ndcg@10"] for r in runs]
      mean = float(np.mean(tests))
      ratio = mean / reference[f"{prefix}ndcg@10"]
      entry[part] = {"test_ndcg@10": tests, "mean": mean, "std": float(np.std(tests)),
                     "valid_ndcg@10": valids, "vs_recent_popularity": ratio,
                     "users": runs[0]["test"].get(f"{prefix}num_users")}
      spread = f" ± {np.std(tests):.4f}" if len(runs) > 1 else ""
      cells.append(f"{mean:.4f}{spread} ({ratio:.3f}×)")
    summary[name] = entry
    rows.append([name, len(runs), *cells])
  protocol = results["sasrec"][0]["protocol"] if "sasrec" in results else None
  print("\ntest NDCG@10 (× recent popularity's), MovieLens-100K temporal 0.8/0.9, every "
        "test-window interaction scored, history excluded, chosen on validation")
  print_table(["model", "seeds", *PARTS], rows)
  path = write_result("forward_in_time", {
      "protocol": protocol, "split": "temporal 0.8/0.9 (event-time quantiles)",
      "reference": REFERENCE, "rows": summary})
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
