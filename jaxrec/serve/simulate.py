"""The simulator's jobs over an export bundle: `jaxrec simulate` (its serving pipeline run in its
dataset's world for N days) and `jaxrec ope` on a simulation's decision log (off-policy estimates
of the bundle's policy)."""

from __future__ import annotations

import json
import os

import numpy as np

from jaxrec.data.synthetic import SyntheticConfig
from jaxrec.errors import UserError
from jaxrec.eval.offpolicy import estimators
from jaxrec.eval.offpolicy.evaluation import evaluate
from jaxrec.eval.simulation.dataset_world import check_same_world, synthetic_config_of
from jaxrec.eval.simulation.days import plot_days, run
from jaxrec.eval.simulation.log import read_log, world_description, world_of_log, write_log
from jaxrec.eval.simulation.policies import GreedyPolicy
from jaxrec.eval.simulation.world import World
from jaxrec.retrieval.bundle import latest_version, load_bundle
from jaxrec.serve.policies import ServingScorer, make_policy


def bundle_world_config(path: str) -> tuple[str, SyntheticConfig]:
  """(bundle directory, its dataset's SyntheticConfig) of an export bundle or export root."""
  if not os.path.isdir(path):
    raise UserError(f"--policy {path} does not exist; pass an export bundle (`jaxrec export "
                    "--workdir TWO_TOWER --ranker DLRM --out DIR`) or its export root.")
  if not os.path.exists(os.path.join(path, "manifest.json")):
    if os.path.exists(os.path.join(path, "config.json")):
      raise UserError(f"--policy {path} is a training workdir; the simulator runs the serving "
                      "pipeline, so export it first: `jaxrec export --workdir TWO_TOWER --ranker "
                      "DLRM --out DIR` and pass DIR.")
    path = latest_version(path)
  bundle = load_bundle(path)
  if not (bundle.ranker_dir and bundle.dataset_dir):
    raise UserError(f"{path} has no ranker and dataset: export it with `jaxrec export --workdir "
                    "TWO_TOWER --ranker DLRM --out DIR`.")
  with open(os.path.join(bundle.query_encoder_dir, "config.json")) as f:
    model_config = json.load(f)
  return path, synthetic_config_of(bundle.dataset_dir, model_config)


def simulate(policy_path: str, days: int, out: str, *, users: int | None = None, k: int = 10,
             seed: int = 0, mmr_lambda: float = 0.7, temperature: float | None = None,
             candidates: int = 20, log: bool = False) -> dict:
  """`jaxrec simulate`: runs the bundle's policy in its dataset's world for `days` days and writes
  OUT/simulation.json, OUT/days.png and, with `log`, the decision log in OUT."""
  if not (isinstance(days, (int, np.integer)) and days >= 1):
    raise UserError(f"--days must be at least 1, got {days!r}")
  if not (isinstance(k, (int, np.integer)) and k >= 1):
    raise UserError(f"--k (the slate size) must be at least 1, got {k!r}")
  if os.path.exists(out) and not os.path.isdir(out):
    raise UserError(f"--out {out} exists and is not a directory.")
  bundle, synthetic = bundle_world_config(policy_path)
  world = World(synthetic, users=users, seed=seed)
  policy = make_policy(bundle, world, mmr_lambda=mmr_lambda, temperature=temperature,
                       candidates=candidates)
  reports, decisions = run(world, policy, days, k=k, seed=seed, log=log)
  os.makedirs(out, exist_ok=True)
  result = {"policy": policy.name, "bundle": os.path.abspath(bundle), "k": k, "seed": seed,
            **world_description(world), "days": reports}
  with open(os.path.join(out, "simulation.json"), "w") as f:
    json.dump(result, f, indent=2)
  plot_days({policy.name: reports}, os.path.join(out, "days.png"))
  if log:
    write_log(out, world, decisions, days=days, k=k, seed=seed, policy=policy.name)
  return result


def evaluate_log(logs: str, policy_path: str, out: str | None = None, *,
                 temperature: float | None = None, candidates: int = 20, reward: str = "click",
                 max_weight: float = 10.0, n_boot: int = 1000, seed: int = 0) -> dict:
  """`jaxrec ope`: off-policy estimates of the bundle's policy's first-slot reward on a log."""
  meta, columns = read_log(logs)
  bundle, synthetic = bundle_world_config(policy_path)
  check_same_world(SyntheticConfig(**meta["synthetic"]), synthetic, f"--policy {policy_path}")
  world = world_of_log(meta)
  if temperature is None:
    # A deterministic target: the serving pipeline's first item (MMR's first pick is always the
    # best-scored one, so the first slot does not depend on its lambda), over the same ranked
    # candidates the reward model's features come from.
    target = GreedyPolicy(ServingScorer(bundle, world, candidates))
  else:
    target = make_policy(bundle, world, temperature=temperature, candidates=candidates)
  estimates = evaluate(world, columns, target, reward=reward, max_weight=max_weight,
                       n_boot=n_boot, seed=seed)
  return estimators.report(estimates, out, logs=os.path.abspath(logs),
                           logging_policy=meta["policy"], target_policy=target.name,
                           reward=f"first-slot {reward}")
