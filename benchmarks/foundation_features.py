"""The foundation model's user embedding as a DLRM feature: the same DLRM with and without it.

    python benchmarks/foundation_features.py [--seeds 0,1,2] [--foundation-workdir DIR]

MovieLens-100K ranking impressions (configs/movielens_dlrm.py: each rating shown with 4 unrated
items, leave-one-out split). The foundation model is configs/movielens_foundation.py trained on
the same prepared dataset (its best validation checkpoint; `--foundation-workdir` reuses a run).
Both DLRMs train through the same loop with the same seeds; the one with the feature adds
`model.user_embedding_from`: the frozen foundation query over each user's tokens strictly before
the example's time, projected into the dot interaction. Test-split metrics of each run's best
validation checkpoint: click / like AUC and logloss, NDCG@10 of the combined score within each
user's impressions. Writes benchmarks/results/foundation_features.json after every run.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, print_table, train_config, write_result  # noqa: E402

DATA = f"data.dir={os.path.join(ROOT, 'data', 'movielens-100k')}"
METRICS = ("click/auc", "click/logloss", "like/auc", "like/logloss", "rating/auc", "ndcg@10")


def mean_std(values: list[float]) -> str:
  if len(values) == 1:
    return f"{values[0]:.4f}"
  return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", default="0,1,2")
  parser.add_argument("--foundation-workdir", default="",
                      help="an existing configs/movielens_foundation.py run on the same data")
  args = parser.parse_args()
  seeds = [int(s) for s in args.seeds.split(",")]
  result = {"protocol": None, "foundation": {}, "runs": {"without": [], "with": []}}
  with tempfile.TemporaryDirectory() as tmp:
    foundation = args.foundation_workdir or os.path.join(tmp, "foundation")
    if not args.foundation_workdir:
      run = train_config("movielens_foundation.py", [DATA, "seed=0"], foundation)
      result["foundation"] = {"trained_here": True, "test_ndcg@10": run["test"]["ndcg@10"],
                              "seconds": run["seconds"], "best_step": run["best_step"]}
    else:
      result["foundation"] = {"trained_here": False, "workdir": os.path.abspath(foundation)}
    variants = {"without": [], "with": [f"model.user_embedding_from={foundation}"]}
    for seed in seeds:
      for name, overrides in variants.items():
        workdir = os.path.join(tmp, f"dlrm-{name}-{seed}")
        run = train_config("movielens_dlrm.py", [DATA, f"seed={seed}", *overrides], workdir)
        result["runs"][name].append({"seed": seed, **{m: run["test"][m] for m in METRICS},
                                     "seconds": run["seconds"], "best_step": run["best_step"]})
        result["protocol"] = run["protocol"]
        print(f"seed {seed} {name:7} feature: " + "  ".join(
            f"{m} {run['test'][m]:.4f}" for m in METRICS), flush=True)
        write_result("foundation_features", {**result, "seeds": seeds})
  runs = result["runs"]
  summary = {name: {m: statistics.mean(r[m] for r in runs[name]) for m in METRICS}
             for name in runs}
  print(f"\nMovieLens-100K, test split, {result['protocol']}; seeds {seeds}")
  print_table(["DLRM", *METRICS, "train s"],
              [[f"{name} foundation user embedding",
                *[mean_std([r[m] for r in runs[name]]) for m in METRICS],
                f"{statistics.mean(r['seconds'] for r in runs[name]):.0f}"] for name in runs])
  print("wrote", write_result("foundation_features", {**result, "seeds": seeds,
                                                      "mean": summary}))


if __name__ == "__main__":
  main()
