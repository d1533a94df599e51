"""Candidate retrieval on MovieLens-100K: the two-tower against every baseline, one protocol.

    python benchmarks/retrieval_quality.py [--seeds 3]

Leave-one-out by time, full ranking over all 1682 items with each user's earlier items excluded,
best validation checkpoint (the trainer issue's protocol). Trained models (the two-tower with
each query encoder, BPR-MF) run --seeds seeds; the closed-form baselines (popularity, ItemKNN,
UserKNN, ALS) are deterministic and run once. Writes benchmarks/results/retrieval_quality.json.

Target (from the issue): the two-tower beats BPR-MF and ItemKNN on test NDCG@10.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, print_table, train_movielens, write_result  # noqa: E402


KEYS = ["recall@10", "ndcg@10", "recall@100"]
# (label, config file, overrides, trained: runs once per seed)
MODELS = [
    ("two-tower, SASRec query encoder", "two_tower", ["model.query_encoder=sasrec"], True),
    ("two-tower, pooled history", "two_tower", ["model.query_encoder=pooling"], True),
    ("BPR-MF", "bpr", [], True),
    ("ALS (with biases)", "als", [], False),
    ("ItemKNN (cosine)", "itemknn", [], False),
    ("UserKNN (cosine)", "userknn", [], False),
    ("popularity", "popularity", [], False),
]


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--data", default=os.path.join(ROOT, "data", "movielens-100k"))
  args = parser.parse_args()
  summary, rows = {}, []
  with tempfile.TemporaryDirectory() as tmp:
    for label, name, overrides, trained in MODELS:
      results = []
      for seed in range(args.seeds if trained else 1):
        workdir = os.path.join(tmp, f"{name}-{len(summary)}-{seed}")
        results.append(train_movielens(name, [f"seed={seed}", f"data.dir={args.data}",
                                              "eval.ks=(10, 100)", *overrides], workdir))
        print(f"{label} seed {seed}: test ndcg@10 {results[-1]['test']['ndcg@10']:.4f} "
              f"({results[-1]['seconds']:.0f} s)", flush=True)
      tests = [r["test"] for r in results]
      mean = {k: float(np.mean([t[k] for t in tests])) for k in KEYS}
      std = {k: float(np.std([t[k] for t in tests])) for k in KEYS}
      summary[label] = {"config": f"configs/movielens_{name}.py", "overrides": overrides,
                        "mean": mean, "std": std, "runs": len(tests),
                        "test": tests, "seconds": [round(r["seconds"], 1) for r in results]}
      spread = lambda k: f"±{std[k]:.4f}" if len(tests) > 1 else ""
      rows.append([label, str(len(tests))] + [f"{mean[k]:.4f}{spread(k)}" for k in KEYS]
                  + [f"{np.mean([r['seconds'] for r in results]):.0f}"])
    protocol = results[0]["protocol"]

  print(f"\nMovieLens-100K, {protocol}; mean of runs\n")
  print_table(["model", "runs"] + KEYS + ["seconds/run"], rows)
  ndcg = lambda label: summary[label]["mean"]["ndcg@10"]
  best_two_tower = max((label for label in summary if label.startswith("two-tower")), key=ndcg)
  met = ndcg(best_two_tower) > max(ndcg("BPR-MF"), ndcg("ItemKNN (cosine)"))
  print(f"\ntarget (two-tower beats BPR-MF and ItemKNN on NDCG@10): {'met' if met else 'NOT met'} "
        f"({best_two_tower}: {ndcg(best_two_tower):.4f}; BPR-MF {ndcg('BPR-MF'):.4f}, "
        f"ItemKNN {ndcg('ItemKNN (cosine)'):.4f})")
  path = write_result("retrieval_quality", {"protocol": protocol, "models": summary,
                                            "target_met": met})
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
