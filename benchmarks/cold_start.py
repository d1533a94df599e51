"""Cold-start retrieval: items first seen after the training cut-off, placed from metadata alone.

    python benchmarks/cold_start.py [--models two_tower,foundation] [--datasets MovieLens-100K,synthetic]

A global temporal split (train before t1, validation to t2, test after) leaves some test items
with no training interactions: their id embeddings never trained, so the two-tower's item tower
embeds them from metadata (genres, year, title words) with the id part dropped, as it learned to
under id dropout; the foundation model (issue 7) scores an item it never saw by its metadata
embedding alone (its id row is dropped out in training likewise). Recall@K is measured on the test users whose held-out item is such a new item,
full ranking over every item. Popularity (training counts) is the baseline the issue names; a
random ranking's expected Recall@K (K / items) is printed beside it for scale. "Among new" ranks
only the new items for the same users (what a freshness slot does), against random (K / new
items): whether metadata alone tells which new item a user wants. "Recent popularity" also counts
the validation period's tokens (where many new items were first seen): a stronger baseline than
the issue's training-count popularity, which can never rank a new item. The issue's bar (issue 7):
the foundation model's Recall@50 on these users >= 2x popularity's.

Data: MovieLens-100K (global temporal split 0.8/0.9) and synthetic data whose catalogue grows
over the log (20% of items released during it). Writes benchmarks/results/cold_start.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, ROOT, print_table, write_result  # noqa: E402

from jaxrec.config import apply_overrides, load_config  # noqa: E402
from jaxrec.eval.cold_start import cold_start_report  # noqa: E402
from jaxrec.train.evaluate import restore_best  # noqa: E402
from jaxrec.train.trainer import train  # noqa: E402

KS = (10, 50)
MODELS = {"two_tower": "movielens_two_tower.py", "foundation": "movielens_foundation.py"}
# name: (dataset, generator settings)
DATASETS = {
    "MovieLens-100K": ("movielens-100k", None),
    "synthetic": ("synthetic", {"num_users": 20_000, "num_items": 10_000,
                                "num_events": 1_000_000, "new_item_fraction": 0.2, "seed": 0}),
}


def _merged(results: dict) -> dict:
  """These results over the ones already written, so a run of some models keeps the others'
  (a file from before the foundation model holds the two-tower's report per dataset)."""
  path = os.path.join(RESULTS, "cold_start.json")
  previous = {}
  if os.path.exists(path):
    with open(path) as f:
      previous = json.load(f).get("datasets", {})
  merged = {name: ({"two_tower": entry} if "model" in entry else dict(entry))
            for name, entry in previous.items()}
  for name, by_model in results.items():
    merged.setdefault(name, {}).update(by_model)
  return merged


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--models", default=",".join(MODELS))
  parser.add_argument("--datasets", default=",".join(DATASETS))
  parser.add_argument("--override", action="append", default=[],
                      help="a config override for every run, e.g. train.num_steps=120 (recorded)")
  args = parser.parse_args()
  rows, results = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.datasets.split(","):
      dataset, synthetic = DATASETS[name]
      for model in args.models.split(","):
        config = load_config(os.path.join(ROOT, "configs", MODELS[model]))
        config = apply_overrides(config, [
            f"seed={args.seed}", f"data.dir={os.path.join(tmp, name)}", "data.split=temporal",
            f"data.dataset={dataset}", f"eval.ks={KS}", *args.override])
        with config.unlocked():
          config.data.synthetic = synthetic
        started = time.perf_counter()
        workdir = os.path.join(tmp, f"{name}-{model}")
        trained = train(config, workdir)
        run, _ = restore_best(workdir)
        report = cold_start_report(run, "test")
        items = run.task.data.stats["items"]
        popularity_50 = report["popularity"]["recall@50"]
        results.setdefault(name, {})[model] = {
            **report, "all_test_users": trained["test"], "items": items,
            "seconds": round(time.perf_counter() - started, 1), "overrides": args.override,
            "bar_recall@50_vs_popularity": (report["model"]["recall@50"] / popularity_50
                                            if popularity_50 else None)}
        for k in KS:
          rows.append([name, model, str(report["cold_items"]), f"{report['users']:.0f}", f"{k}",
                       f"{report['model'][f'recall@{k}']:.4f}",
                       f"{report['popularity'][f'recall@{k}']:.4f}",
                       f"{report['recent_popularity'][f'recall@{k}']:.4f}", f"{k / items:.4f}",
                       f"{report['model_among_new_items'][f'recall@{k}']:.4f}",
                       f"{min(1.0, k / report['cold_items']):.4f}",
                       f"{trained['test'][f'recall@{k}']:.4f}"])
        print(f"{name} {model}: done in {results[name][model]['seconds']:.0f} s", flush=True)
  print("\nTest users whose held-out item had no training interactions (global temporal split); "
        "full ranking\n")
  print_table(["data", "model", "new items", "users", "K", "model R@K", "popularity R@K",
               "recent popularity R@K", "random R@K", "model R@K among new", "random among new",
               "model R@K (all users)"], rows)
  path = write_result("cold_start", {"ks": KS, "datasets": _merged(results)})
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
