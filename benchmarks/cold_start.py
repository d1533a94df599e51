"""Cold-start retrieval: items first seen after the training cut-off, placed from metadata alone.

    python benchmarks/cold_start.py [--models two_tower,foundation] [--datasets MovieLens-100K,synthetic]
        [--override model.id_dropout=0.3 --label foundation_id_dropout_0.3]
    python benchmarks/cold_start.py --references-only    # recompute the references, no training

Protocol (issue 7's cold-start bar). A global temporal split (train before the 80% event-time
quantile, validation to 90%, test after) leaves some held-out items with no training
interactions: "new items". Their id rows never trained, so a model places them from metadata
(genres, year, title words): the two-tower's item tower with the id part dropped, the foundation
model with its out-of-vocabulary row plus its metadata. On the test users whose held-out item is
new, Recall@K (K = 10, 50) of:
- the model, full ranking over every item, every item of the user's history excluded;
- popularity by training counts, the baseline the issue names: a new item has no count, so it is 0
  by construction and "2x popularity" is met by any model that ever ranks a new item: degenerate;
- metadata popularity: training counts, and for a new item the count its year and genres predict
  (the mean count of trained items sharing them): a popularity that CAN rank a new item, the fair
  reference for "2x popularity" (jaxrec/eval/metrics/metadata_baselines.py);
- genre profile: the user's history genre shares · the item's genres;
- recent genre profile: the same, each history item counting half 100 tokens later (the recent
  taste, what a window of recent tokens holds);
- random: K / items, the expected recall of a random order;
and the same on the new items only ("among new": what a freshness slot ranks; random K / new).
The bar as measured here: the model's Recall@50 >= 2x metadata popularity's AND above random,
in full ranking and among new items (a metadata path no better than a random order has learned
nothing). Recent popularity (counts through the validation period) is printed too.
Settings are chosen on the validation users whose held-out item is new (reported as "valid");
the test numbers are reported once. "new_targets" says how concentrated the held-out new items
are: on the synthetic data a few popular new items account for half the users, so these recalls
move in steps of whole items and differ widely between validation and test.

Data: MovieLens-100K; synthetic data whose catalogue grows over the log (20% of items released
during it); synthetic-long histories (2,000 users, >= 2,000 tokens each) with 20% of items
released during the log, where what a user watches follows the topic and style an item's genres
name. Writes benchmarks/results/cold_start.json (other labels' earlier results are kept).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, ROOT, device, print_table, write_result  # noqa: E402

from jaxrec.config import apply_overrides, load_config  # noqa: E402
from jaxrec.eval.metrics.cold_start import cold_start_report  # noqa: E402
from jaxrec.train.restore import restore_model  # noqa: E402
from jaxrec.train.trainer import train  # noqa: E402

KS = (10, 50)
MODELS = {"two_tower": "movielens_two_tower.py", "foundation": "movielens_foundation.py"}
# name: (dataset, generator settings, settings of every run on it)
DATASETS = {
    "MovieLens-100K": ("movielens-100k", None, []),
    # Histories average 21 tokens (median 10): a 50-token window holds nearly all of them at half
    # the cost of the default 100.
    "synthetic": ("synthetic", {"num_users": 20_000, "num_items": 10_000,
                                "num_events": 1_000_000, "new_item_fraction": 0.2, "seed": 0},
                  ["model.max_len=50", "train.num_steps=200", "train.eval_every=100"]),
    # Tastes that metadata names: a user's interests are topics with a favourite style each, and
    # an item's genres are its topic and style; 20% of items are released during the log. On
    # `synthetic`, by contrast, popularity (not in any metadata) decides most picks.
    "synthetic-long": ("synthetic-long", {"num_users": 2000, "new_item_share": 0.2, "seed": 0},
                       # The long-history objective (jaxrec/train/defaults.py long_history_data).
                       ["model.max_len=200", "train.batch_size=80", "train.num_steps=400",
                        "train.eval_every=100", "loss.name=ce", "loss.exclude_watched=True",
                        "eval.batch_size=128",
                        # Held-out targets here start a new session: each position also learns
                        # an item of its next 100 tokens (0.676 Recall@50 among new items on
                        # validation, 0.563 without; label foundation_future_100).
                        "loss.future_weight=1.0", "loss.future_window=100"]),
}
REFERENCES = ("popularity", "metadata_popularity", "genre_profile", "recent_genre_profile",
              "random")


def bar(report: dict, k: int = 50) -> dict:
  """The cold-start bar on one report: full ranking and among new items, model vs references."""
  out = {}
  for where, suffix in (("full_ranking", ""), ("among_new_items", "_among_new_items")):
    model = report["model" + suffix][f"recall@{k}"]
    refs = {name: report[name + suffix][f"recall@{k}"] for name in REFERENCES
            if name + suffix in report}
    metadata_pop, random = refs["metadata_popularity"], refs["random"]
    out[where] = {"model": model, **refs,
                  "model_vs_metadata_popularity": model / metadata_pop if metadata_pop else None,
                  "met": bool(model >= 2 * metadata_pop and model > random)}
  out["issue_bar_vs_popularity"] = (
      "degenerate: popularity by training counts is 0 on these users by construction")
  return out


def references_only(datasets: list[str], tmp: str) -> None:
  """Recomputes every stored entry's references (metadata popularity, genre profile, random)
  and bar on the same data, keeping the models' numbers: the references need no training."""
  from jaxrec.eval.metrics.cold_start import cold_items, reference_report
  from jaxrec.train.sequential import SequentialTask
  with open(os.path.join(RESULTS, "cold_start.json")) as f:
    stored = json.load(f)["datasets"]
  for name in datasets:
    dataset, synthetic, _ = DATASETS[name]
    config = apply_overrides(load_config(os.path.join(ROOT, "configs", "movielens_sasrec.py")), [
        f"data.dir={os.path.join(tmp, name)}", "data.split=temporal", f"data.dataset={dataset}",
        f"eval.ks={KS}"])
    with config.unlocked():
      config.data.synthetic = synthetic
    task = SequentialTask(config)
    cold = cold_items(task.data)
    refs = {split: reference_report(task, split, cold) for split in ("test", "valid")}
    for label, entry in stored.get(name, {}).items():
      if "valid" not in entry:
        continue  # an entry from before the references existed
      entry.update(refs["test"])
      entry["bar"] = bar(entry)
      entry["valid"].update(refs["valid"])
      entry["valid"]["bar"] = bar(entry["valid"])
      print(f"{name} {label}: bar (test) {json.dumps(entry['bar'])}", flush=True)
  path = write_result("cold_start", {"ks": KS, "protocol": _protocol(), "datasets": stored})
  print(f"wrote {path}")


def _protocol() -> str:
  return __doc__.split("\n\n", 2)[2].split("\n\nData:")[0]


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
                      help="a config override for every run, e.g. model.id_dropout=0.3 (recorded)")
  parser.add_argument("--label", default="",
                      help="the key results are stored under (default: the model's name)")
  parser.add_argument("--references-only", action="store_true",
                      help="recompute the references of the stored results; train nothing")
  args = parser.parse_args()
  if args.references_only:
    with tempfile.TemporaryDirectory() as tmp:
      references_only(args.datasets.split(","), tmp)
    return
  rows, results = [], {}
  with tempfile.TemporaryDirectory() as tmp:
    for name in args.datasets.split(","):
      dataset, synthetic, settings = DATASETS[name]
      for model in args.models.split(","):
        label = args.label or model
        config = load_config(os.path.join(ROOT, "configs", MODELS[model]))
        overrides = [*settings, *args.override] if model == "foundation" else args.override
        config = apply_overrides(config, [
            f"seed={args.seed}", f"data.dir={os.path.join(tmp, name)}", "data.split=temporal",
            f"data.dataset={dataset}", f"eval.ks={KS}", *overrides])
        with config.unlocked():
          config.data.synthetic = synthetic
        started = time.perf_counter()
        workdir = os.path.join(tmp, f"{name}-{label}")
        trained = train(config, workdir)
        run = restore_model(workdir)
        step = run.step
        report = cold_start_report(run, "test")
        valid = cold_start_report(run, "valid")
        items = run.task.data.stats["items"]
        results.setdefault(name, {})[label] = {
            **report, "bar": bar(report), "valid": {**valid, "bar": bar(valid)},
            "all_test_users": trained["test"], "all_valid_users": trained.get("valid"),
            "best_step": step, "items": items, "seed": args.seed,
            "device": device(),
            "seconds": round(time.perf_counter() - started, 1), "overrides": overrides}
        for split, r in (("valid", valid), ("test", report)):
          for k in KS:
            rows.append([name, label, split, str(r["cold_items"]), f"{r['users']:.0f}", f"{k}",
                         *(f"{r[n][f'recall@{k}']:.4f}" for n in
                           ("model", "popularity", "metadata_popularity", "genre_profile",
                            "recent_genre_profile", "random")),
                         *(f"{r[n + '_among_new_items'][f'recall@{k}']:.4f}" for n in
                           ("model", "metadata_popularity", "genre_profile",
                            "recent_genre_profile", "random"))])
        print(f"{name} {label}: done in {results[name][label]['seconds']:.0f} s; bar (test): "
              f"{json.dumps(results[name][label]['bar'])}", flush=True)
  print("\nUsers whose held-out item had no training interactions (global temporal split); "
        "Recall@K, full ranking, then among the new items only\n")
  print_table(["data", "model", "split", "new items", "users", "K", "model", "popularity",
               "metadata pop.", "genre profile", "recent genre profile", "random", "model (new)",
               "metadata pop. (new)", "genre profile (new)", "recent genre profile (new)",
               "random (new)"], rows)
  path = write_result("cold_start", {"ks": KS, "protocol": _protocol(),
                                     "datasets": _merged(results)})
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
