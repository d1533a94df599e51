"""Beyond-accuracy metrics of MovieLens-100K models, as `jaxrec eval` reports them, beside their
accuracy: popularity (the reference: the most popular unseen items for everyone), ItemKNN, ALS
and SASRec.

    python benchmarks/beyond_accuracy.py

Each model's test-split top-10 lists (full ranking over all 1682 items, each user's earlier items
excluded, best validation checkpoint; the lists NDCG and Recall are computed on) give coverage,
exposure Gini, intra-list diversity on the model's item vectors (ItemKNN and popularity have
none), genre entropy and calibration KL on the MovieLens genres, novelty and serendipity
(held-out items that the popularity list would not have shown). Writes
benchmarks/results/beyond_accuracy.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, print_table, train_movielens, write_result  # noqa: E402

from jaxrec.train.evaluate import evaluate_workdir  # noqa: E402

MODELS = ("popularity", "itemknn", "als", "sasrec")
ACCURACY = ("ndcg@10", "recall@10")
LISTS = ("coverage", "exposure_gini", "intra_list_diversity", "genre_entropy", "calibration_kl",
         "novelty", "serendipity")


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default=os.path.join(ROOT, "data", "movielens-100k"))
  args = parser.parse_args()
  results = {}
  with tempfile.TemporaryDirectory() as tmp:
    for name in MODELS:
      workdir = os.path.join(tmp, name)
      trained = train_movielens(name, [f"data.dir={args.data}"], workdir)
      result = evaluate_workdir(workdir, "test")
      results[name] = {**{k: result[k] for k in ACCURACY}, **result["beyond_accuracy"],
                       "train_seconds": round(trained["seconds"], 1)}
      print(f"{name}: ndcg@10 {result['ndcg@10']:.4f} ({trained['seconds']:.0f} s)", flush=True)
    protocol = result["protocol"]

  rows = [[name] + [f"{r[k]:.4f}" if k in r else "-" for k in ACCURACY + LISTS]
          for name, r in results.items()]
  print(f"\nMovieLens-100K, {protocol}; top-10 lists of "
        f"{results['sasrec']['users']} users\n")
  print_table(["model", *ACCURACY, *LISTS], rows)
  path = write_result("beyond_accuracy", {"protocol": protocol, "models": results})
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
