"""Sequential recommenders on MovieLens-100K: test metrics under one protocol.

    python benchmarks/sequential_quality.py [--seeds 3]

Leave-one-out by time, full ranking over all 1682 items with each user's earlier items excluded,
best validation checkpoint. SASRec is trained with --seeds seeds; BERT4Rec and GRU4Rec once; the
popularity baseline is ranked by the same code. The RecBole row is the measurement quoted in
issue 3 (RecBole 1.2.1 SASRec, same data and protocol on this kind of machine); it is not re-run
here because RecBole needs PyTorch. Writes benchmarks/results/sequential_quality.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, print_table, train_movielens, write_result  # noqa: E402

from jaxrec.config import apply_overrides, load_config  # noqa: E402
from jaxrec.eval.metrics.popularity import evaluate_popularity  # noqa: E402
from jaxrec.train.trainer import build_task  # noqa: E402

KEYS = ["ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20"]
RECBOLE_SASREC = {"ndcg@10": 0.0636, "recall@10": 0.1326, "mrr@10": 0.0429}


def run(name: str, seed: int, data_dir: str, workdir: str) -> dict:
  results = train_movielens(name, [f"seed={seed}", f"data.dir={data_dir}"], workdir)
  print(f"{name} seed {seed}: test ndcg@10 {results['test']['ndcg@10']:.4f} "
        f"({results['seconds']:.0f} s, best step {results['best_step']})", flush=True)
  return results


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--data", default=os.path.join(ROOT, "data", "movielens-100k"))
  args = parser.parse_args()
  runs: dict[str, list[dict]] = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name, seeds in (("sasrec", range(args.seeds)), ("bert4rec", [0]), ("gru4rec", [0])):
      runs[name] = [run(name, s, args.data, os.path.join(tmp, f"{name}-{s}")) for s in seeds]
    config = apply_overrides(load_config(os.path.join(ROOT, "configs", "movielens_sasrec.py")),
                             [f"data.dir={args.data}"])
    popularity = evaluate_popularity(build_task(config), "test")
    protocol = runs["sasrec"][0]["protocol"]

  rows, summary = [], {}
  for name, results in runs.items():
    tests = [r["test"] for r in results]
    mean = {k: float(np.mean([t[k] for t in tests])) for k in KEYS}
    std = {k: float(np.std([t[k] for t in tests])) for k in KEYS}
    summary[name] = {"mean": mean, "std": std, "seeds": len(tests),
                     "seconds": [r["seconds"] for r in results],
                     "valid_ndcg@10": [r["valid"]["ndcg@10"] for r in results]}
    label = f"jaxrec {name}" + (f" ({len(tests)} seeds)" if len(tests) > 1 else "")
    rows.append([label] + [f"{mean[k]:.4f}" + (f"±{std[k]:.4f}" if len(tests) > 1 else "")
                           for k in KEYS])
  rows.append(["popularity"] + [f"{popularity[k]:.4f}" for k in KEYS])
  rows.append(["RecBole SASRec (quoted)"] + [f"{RECBOLE_SASREC[k]:.4f}" if k in RECBOLE_SASREC
                                             else "-" for k in KEYS])
  print(f"\nMovieLens-100K, {protocol}\n")
  print_table(["model"] + KEYS, rows)
  path = write_result("sequential_quality", {
      "protocol": protocol, "models": summary, "popularity": popularity,
      "recbole_sasrec_quoted": RECBOLE_SASREC})
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
