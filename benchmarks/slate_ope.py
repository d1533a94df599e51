"""Slate off-policy estimators against the truth: position IPS and the pseudo-inverse (PI) beside
whole-page IPS (the reference: unbiased under any reward, weights whole pages) on a simulated
page with a product logger (jaxrec/eval/offpolicy/page_world.py).

For each world (rows x pool items per row; rewards independent per row, or with spill-over from
row 1 into row 0, which keeps the page total additive) it logs `--logs` independent logs of
`--slates` pages and reports each estimator's bias, RMSE, the coverage of its 95% bootstrap
interval (clustered by page) and its mean effective sample size. Writes
benchmarks/results/slate_ope.json.

    python benchmarks/slate_ope.py
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.common import print_table, write_result  # noqa: E402
from jaxrec.eval.offpolicy import estimators, slate_estimators  # noqa: E402
from jaxrec.eval.offpolicy.page_world import PageWorld  # noqa: E402

WORLDS = [(3, 4), (5, 10)]                  # (rows, items per row)


def estimates(world: PageWorld, n: int, seed: int, spillover: bool, n_boot: int) -> dict:
  log, target, page_target, page_logger = world.sample(n, seed, spillover)
  pages = estimators.BanditLog(context=log.context, action=np.arange(n), reward=log.reward.sum(1),
                               propensity=page_logger)
  kw = dict(n_boot=n_boot, seed=seed)
  return {"whole-page IPS": estimators.ips(pages, page_target, **kw),
          "position IPS": slate_estimators.position_ips(log, target, **kw),
          "PI": slate_estimators.pseudo_inverse(log, target, **kw)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--logs", type=int, default=100)
  parser.add_argument("--slates", type=int, default=2000)
  parser.add_argument("--bootstrap", type=int, default=500)
  args = parser.parse_args()
  started = time.perf_counter()
  summary, rows = {}, []
  for num_rows, pool in WORLDS:
    world = PageWorld.make(contexts=5, rows=num_rows, pool=pool)
    for spillover in (False, True):
      truth = world.truth(spillover)
      runs = [estimates(world, args.slates, seed, spillover, args.bootstrap)
              for seed in range(args.logs)]
      name = f"{num_rows}x{pool}{', spill-over' if spillover else ''}"
      summary[name] = {"truth": truth}
      for estimator in runs[0]:
        values = np.array([r[estimator].value for r in runs])
        covered = np.mean([r[estimator].ci_low <= truth <= r[estimator].ci_high for r in runs])
        ess = np.mean([r[estimator].diagnostics["effective_sample_size"] for r in runs])
        weighted = runs[0][estimator].diagnostics["n"]    # pages, or page rows for position IPS
        stats = {"bias": float(values.mean() - truth),
                 "rmse": float(np.sqrt(np.mean((values - truth) ** 2))),
                 "coverage_95": float(covered), "mean_ess": float(ess), "weights": weighted}
        summary[name][estimator] = stats
        rows.append([name, f"{truth:.3f}", estimator, f"{stats['bias']:+.4f}",
                     f"{stats['rmse']:.4f}", f"{covered:.2f}", f"{ess:,.0f} / {weighted:,}"])
  print(f"{args.logs} logs of {args.slates} pages per world; 95% percentile bootstrap over pages "
        f"({args.bootstrap} resamples)")
  print_table(["world (rows x items)", "truth", "estimator", "bias", "RMSE", "coverage",
               "mean ESS / weights"], rows)
  path = write_result("slate_ope", {"logs": args.logs, "slates": args.slates,
                                    "bootstrap": args.bootstrap, "worlds": summary,
                                    "seconds": round(time.perf_counter() - started, 1)})
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
