"""Cold-start retrieval: items first seen after the training cut-off, placed from metadata alone.

    python benchmarks/cold_start.py

A global temporal split (train before t1, validation to t2, test after) leaves some test items
with no training interactions: their id embeddings never trained, so the two-tower's item tower
embeds them from metadata (genres, year, title words) with the id part dropped, as it learned to
under id dropout. Recall@K is measured on the test users whose held-out item is such a new item,
full ranking over every item. Popularity (training counts) is the baseline the issue names; a
random ranking's expected Recall@K (K / items) is printed beside it for scale. "Among new" ranks
only the new items for the same users (what a freshness slot does), against random (K / new
items): whether metadata alone tells which new item a user wants.

Data: MovieLens-100K (global temporal split 0.8/0.9) and synthetic data whose catalogue grows
over the log (20% of items released during it). Writes benchmarks/results/cold_start.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, print_table, write_result  # noqa: E402

from jaxrec.config import apply_overrides, load_config  # noqa: E402
from jaxrec.eval.cold_start import cold_start_report  # noqa: E402
from jaxrec.train.evaluate import restore_best  # noqa: E402
from jaxrec.train.trainer import train  # noqa: E402

KS = (10, 50)
# name: (dataset, generator settings)
DATASETS = {
    "MovieLens-100K": ("movielens-100k", None),
    "synthetic": ("synthetic", {"num_users": 20_000, "num_items": 10_000,
                                "num_events": 1_000_000, "new_item_fraction": 0.2, "seed": 0}),
}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  rows, results = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    for name, (dataset, synthetic) in DATASETS.items():
      config = load_config(os.path.join(ROOT, "configs", "movielens_two_tower.py"))
      config = apply_overrides(config, [
          f"seed={args.seed}", f"data.dir={os.path.join(tmp, name)}", "data.split=temporal",
          f"data.dataset={dataset}", f"eval.ks={KS}"])
      with config.unlocked():
        config.data.synthetic = synthetic
      started = time.perf_counter()
      workdir = os.path.join(tmp, f"{name}-run")
      trained = train(config, workdir)
      run, _ = restore_best(workdir)
      report = cold_start_report(run, "test")
      items = run.task.data.stats["items"]
      results[name] = {**report, "all_test_users": trained["test"],
                       "items": items, "seconds": round(time.perf_counter() - started, 1)}
      for k in KS:
        rows.append([name, str(report["cold_items"]), f"{report['users']:.0f}", f"{k}",
                     f"{report['model'][f'recall@{k}']:.4f}",
                     f"{report['popularity'][f'recall@{k}']:.4f}", f"{k / items:.4f}",
                     f"{report['model_among_new_items'][f'recall@{k}']:.4f}",
                     f"{min(1.0, k / report['cold_items']):.4f}",
                     f"{trained['test'][f'recall@{k}']:.4f}"])
      print(f"{name}: done in {results[name]['seconds']:.0f} s", flush=True)
  print("\nTest users whose held-out item had no training interactions (global temporal split); "
        "full ranking\n")
  print_table(["data", "new items", "users", "K", "two-tower R@K", "popularity R@K",
               "random R@K", "two-tower R@K among new", "random among new",
               "two-tower R@K (all users)"], rows)
  path = write_result("cold_start", {"ks": KS, "datasets": results})
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
