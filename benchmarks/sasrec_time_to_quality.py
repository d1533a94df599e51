"""Wall time for jaxrec's SASRec to reach RecBole SASRec's best validation NDCG@10, both trained
in the same run on the same split and machine, under each full-ranking protocol; with steps/s
and achieved GFLOP/s beside a large jitted matmul measured in the same run.

    python benchmarks/sasrec_time_to_quality.py [--max-epochs N] [--recbole-max-epochs 300]
        [--seed 0] [--protocols history_excluded,nothing_excluded] [--peer-python PYTHON]

RecBole 1.2.1 SASRec (its default recipe) is trained by benchmarks/peer_quality.py's runner on
jaxrec's split, its validation NDCG@10 recorded after every epoch under both protocols ("history
excluded", "nothing excluded"); the run is cached (benchmarks/results/peer_runs/), so a rerun
reuses it. Its target under a protocol is its best validation NDCG@10 under that protocol, and
its time the training seconds up to the first epoch that reached it (evaluation not counted).
jaxrec's SASRec is then trained once per protocol with that protocol's recipe, as
peer_quality.py trains it (configs/movielens_sasrec.py + JAXREC_RECIPES), epoch by epoch (943
users / batch 128 = 7 steps) up to the recipe's steps, validated under that protocol after each
epoch; its time to a target counts the jitted steps (compilation included) and input, not the
validation passes. Writes benchmarks/results/sasrec_time_to_quality.json.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, print_table, write_result  # noqa: E402
from peer_quality import PROTOCOLS, jaxrec_config, load_sequences, run_recbole  # noqa: E402

from jaxrec.parallel.partitioner import axis_rules  # noqa: E402
from jaxrec.train.evaluator import Evaluator  # noqa: E402
from jaxrec.train.trainer import Run  # noqa: E402


def matmul_gflops(n: int = 2048, repeats: int = 10) -> float:
  a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32)
  f = jax.jit(lambda x: x @ x)
  f(a).block_until_ready()
  started = time.perf_counter()
  for _ in range(repeats):
    out = f(a)
  out.block_until_ready()
  return 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9


def step_flops(run: Run, batch, step: int) -> float:
  """XLA's FLOP count of one compiled train step. Partitioner.jit returns a wrapper that enters
  the mesh and axis rules around the jitted function; lower that function in the same context."""
  cells = [c.cell_contents for c in run.train_step.__closure__ or ()]
  jitted = next(c for c in cells if hasattr(c, "lower"))
  with jax.set_mesh(run.partitioner.mesh), axis_rules(run.partitioner.rules):
    compiled = jitted.lower(run.state, run.opt_state, batch, jnp.int32(step)).compile()
  return compiled.cost_analysis()["flops"]


def recbole_targets(result: dict) -> dict:
  """Per protocol: RecBole's best validation NDCG@10, the epoch and training seconds that first
  reached it."""
  out = {}
  for p in PROTOCOLS:
    best = result["protocols"][p]["valid"]["ndcg@10"]
    first = next(e for e in result["history"] if e[p]["ndcg@10"] >= best)
    out[p] = {"target": best, "epoch": first["epoch"], "train_s": first["train_s_total"]}
  return out


def time_to_target(config, target: float, max_epochs: int | None) -> dict:
  """Train `config` epoch by epoch, validating under its own protocol after each, until
  validation NDCG@10 reaches `target` or `max_epochs` (default: the config's num_steps): the
  training seconds (jitted steps, compilation and input; not validation) to the first epoch
  that reached it."""
  run = Run(config)
  evaluator = Evaluator(run.task, run.partitioner, run.graphdef)
  iterator = iter(run.task.train_data(config.seed))
  steps_per_epoch = run.task.data.num_users // config.train.batch_size
  max_epochs = max_epochs or -(-config.train.num_steps // steps_per_epoch)
  train_s = eval_s = 0.0
  step, history, reached, flops_per_step = 0, [], None, None
  for epoch in range(1, max_epochs + 1):
    started = time.perf_counter()
    for _ in range(steps_per_epoch):
      step += 1
      batch = run.partitioner.shard_inputs(next(iterator))
      if flops_per_step is None:
        flops_per_step = step_flops(run, batch, step)
      run.state, run.opt_state, out = run.train_step(run.state, run.opt_state, batch,
                                                     jnp.int32(step))
    jax.block_until_ready(run.state)
    train_s += time.perf_counter() - started
    started = time.perf_counter()
    valid = float(evaluator(run.state, "valid")["ndcg@10"])
    eval_s += time.perf_counter() - started
    history.append({"epoch": epoch, "step": step, "train_s": train_s, "valid_ndcg@10": valid})
    print(f"epoch {epoch:3d} step {step:4d} train {train_s:6.1f} s  valid ndcg@10 {valid:.4f}",
          flush=True)
    if valid >= target:
      reached = {"epoch": epoch, "step": step, "train_s": train_s}
      break
  return {"reached": reached, "history": history, "train_seconds_total": train_s,
          "eval_seconds_total": eval_s, "steps_per_s": step / train_s,
          "gflop_per_step": flops_per_step / 1e9,
          "best_valid": max(h["valid_ndcg@10"] for h in history)}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--data", default=os.path.join(ROOT, "data", "movielens-100k"))
  parser.add_argument("--max-epochs", type=int, default=None,
                      help="jaxrec epochs at most (default: the recipe's train.num_steps)")
  parser.add_argument("--recbole-max-epochs", type=int, default=300)
  parser.add_argument("--seed", type=int, default=0)
  parser.add_argument("--protocols", default=",".join(PROTOCOLS))
  parser.add_argument("--peer-python", default=None)
  args = parser.parse_args()
  protocols = [p for p in args.protocols.split(",") if p]
  if set(protocols) - set(PROTOCOLS):
    raise SystemExit(f"unknown protocols {protocols}: choose from {', '.join(PROTOCOLS)}")

  seqs, split_hash = load_sequences(args.data)
  recbole = run_recbole("sasrec", args.seed, args.recbole_max_epochs, seqs, split_hash,
                        args.peer_python)
  targets = recbole_targets(recbole)
  peak = matmul_gflops()
  capped = "" if recbole["complete"] else f" (capped at {recbole['epochs_trained']} epochs)"
  jaxrec, rows = {}, []
  for p in protocols:
    config, recipe = jaxrec_config("sasrec", args.seed, args.data, p)
    print(f"jaxrec SASRec, {PROTOCOLS[p]} ({' '.join(recipe)}): to {targets[p]['target']:.4f}",
          flush=True)
    jaxrec[p] = r = {"recipe": recipe,
                     **time_to_target(config, targets[p]["target"], args.max_epochs)}
    t, got = targets[p], r["reached"]
    rows += [
        [f"{PROTOCOLS[p]}: RecBole best valid NDCG@10{capped}", f"{t['target']:.4f}", ""],
        ["  training seconds to reach it", f"{got['train_s']:.1f}" if got else
         f"not reached in {len(r['history'])} epochs (best {r['best_valid']:.4f})",
         f"{t['train_s']:.1f}"],
        ["  epochs to reach it", got["epoch"] if got else "-", t["epoch"]],
        ["  jaxrec seconds / RecBole seconds",
         f"{got['train_s'] / t['train_s']:.3f}" if got else "-", ""],
        ["  seconds per epoch", f"{r['train_seconds_total'] / len(r['history']):.1f}",
         f"{recbole['seconds_per_epoch']:.1f}"],
        [f"  steps/s (batch {config.train.batch_size} x length {config.model.max_len})",
         f"{r['steps_per_s']:.2f}", "-"],
        ["  achieved GFLOP/s (XLA cost analysis)",
         f"{r['gflop_per_step'] * r['steps_per_s']:.1f}", "-"]]
  rows.append(["jitted 2048^3 matmul GFLOP/s, same run", f"{peak:.1f}", "-"])
  print()
  print_table(["measure", "jaxrec", "RecBole 1.2.1 (cached run)"], rows)
  write_result("sasrec_time_to_quality", {
      "protocols": {p: PROTOCOLS[p] for p in protocols}, "recbole_targets": targets,
      "jaxrec": jaxrec, "matmul_gflops": peak,
      "recbole": {"run": recbole.get("key"), "complete": recbole["complete"],
                  "epochs_trained": recbole["epochs_trained"],
                  "seconds_per_epoch": recbole["seconds_per_epoch"],
                  "device": recbole.get("device"),
                  "history": [{"epoch": e["epoch"], "train_s": e["train_s_total"],
                               **{p: e[p]["ndcg@10"] for p in PROTOCOLS}}
                              for e in recbole["history"]]}})


if __name__ == "__main__":
  main()
