"""Multi-task ranking: the DLRM against per-head logistic regression, on synthetic impressions and
on MovieLens-100K.

    python benchmarks/ranking_quality.py [--datasets synthetic,movielens] [--seed 0]

Both models train through the same loop on the same features; logistic regression is the DLRM
config with the deep part off and the wide (linear, one weight per id) part on, so the
comparison isolates the embeddings, interaction and MLPs. Test-split metrics of the best
validation checkpoint: per-head AUC (regression heads: AUC of the prediction against label > 0),
logloss for binary heads, and NDCG@10 of the combined policy score within each user's
impressions. Writes benchmarks/results/ranking_quality.json.

Target (from the issue): the multi-task model beats logistic regression on every head's AUC.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, print_table, train_config, write_result  # noqa: E402

DATASETS = {
    "synthetic": ("synthetic_dlrm.py", [f"data.dir={os.path.join(ROOT, 'data', 'synthetic-ranking')}"]),
    "movielens": ("movielens_dlrm.py", [f"data.dir={os.path.join(ROOT, 'data', 'movielens-100k')}"]),
}
MODELS = {"DLRM (multi-task)": [], "logistic regression": ["model.deep=False", "model.wide=True"]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--datasets", default=",".join(DATASETS))
  parser.add_argument("--seed", type=int, default=0)
  args = parser.parse_args()
  summary = {}
  with tempfile.TemporaryDirectory() as tmp:
    for dataset in args.datasets.split(","):
      config_file, data = DATASETS[dataset]
      results = {}
      for model, overrides in MODELS.items():
        workdir = os.path.join(tmp, f"{dataset}-{len(results)}")
        run = train_config(config_file, [*data, f"seed={args.seed}", *overrides], workdir)
        results[model] = {**run["test"], "seconds": run["seconds"], "best_step": run["best_step"]}
      heads = sorted(k.split("/")[0] for k in results[next(iter(MODELS))] if k.endswith("/auc"))
      dlrm, logistic = (results[m] for m in MODELS)
      wins = {h: dlrm[f"{h}/auc"] > logistic[f"{h}/auc"] for h in heads
              if not math.isnan(dlrm[f"{h}/auc"])}
      summary[dataset] = {"models": results, "dlrm_beats_logistic_auc": wins,
                          "protocol": run["protocol"]}
      print(f"\n{dataset}: test split, {run['protocol']}")
      rows = [[f"{h} AUC", f"{dlrm[f'{h}/auc']:.4f}", f"{logistic[f'{h}/auc']:.4f}",
               "yes" if wins.get(h) else "no"] for h in heads]
      rows.append(["combined NDCG@10", f"{dlrm['ndcg@10']:.4f}", f"{logistic['ndcg@10']:.4f}",
                   "yes" if dlrm["ndcg@10"] > logistic["ndcg@10"] else "no"])
      rows.append(["train seconds", f"{dlrm['seconds']:.0f}", f"{logistic['seconds']:.0f}", ""])
      print_table(["", *MODELS, "DLRM better"], rows)
  print("\nwrote", write_result("ranking_quality", summary))


if __name__ == "__main__":
  main()
