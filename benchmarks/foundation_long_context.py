"""Long context: the foundation model over 2,048 tokens vs SASRec over 200, and memory vs length.

    python benchmarks/foundation_long_context.py [--steps 150] [--users 1000]

Data: the synthetic-long dataset (jaxrec/data/synthetic_sessions.py): every user has >= 2,000
tokens, ~24 slowly drifting interests with a favourite style each, and short sessions, so the last
200 tokens miss part of a user's interests. Leave-one-out by time; test metrics rank all 7,200
items with each user's earlier items excluded (the same protocol for every row).

Rows: SASRec (configs/synthetic_long_sasrec.py, the last 200 tokens) and the foundation model over
2,048 tokens (configs/synthetic_long_foundation.py: 512-token window + 4 summary tokens). Both
train the same number of steps of ~16k tokens with logQ-corrected sampled softmax.

Memory: the compiled train step's memory analysis (XLA's plan: arguments + outputs + scratch
− donated buffers) of the foundation model at 512 / 1,024 / 2,048 / 4,096 tokens, 8 users per
step, with local attention and with full attention, and the ratio to 512.
Writes benchmarks/results/foundation_long_context.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, ROOT, print_table, train_config, write_result  # noqa: E402

from jaxrec.train.defaults import long_context_foundation_config  # noqa: E402
from jaxrec.train.step import make_train_step  # noqa: E402
from jaxrec.train.trainer import Run  # noqa: E402

KEYS = ["ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20"]
LENGTHS = (512, 1024, 2048, 4096)
MEMORY_BATCH = 8


def quality_runs(steps: int, users: int, workdir: str) -> dict[str, dict]:
  common = [f"train.num_steps={steps}", f"train.eval_every={steps}",
            f"data.synthetic.num_users={users}",
            f"data.dir={os.path.join(ROOT, 'data', f'synthetic-long-{users}')}"]
  runs = {
      "SASRec @200": ("synthetic_long_sasrec.py", []),
      "foundation @2048 (window 512 + 4 global)": ("synthetic_long_foundation.py", []),
  }
  results = {}
  for name, (config_file, overrides) in runs.items():
    out = train_config(config_file, common + overrides, os.path.join(workdir, str(len(results))))
    print(f"{name}: test ndcg@10 {out['test']['ndcg@10']:.4f} ({out['seconds']:.0f} s, best step "
          f"{out['best_step']})", flush=True)
    results[name] = out
  return results


def train_step_memory(config) -> dict[str, int]:
  """XLA's memory plan for one compiled train step of `config` (nothing is run)."""
  run = Run(config)
  batch = next(iter(run.task.train_data(0)))
  step = make_train_step(run.graphdef, run.tx, run.task.loss, config.seed, run.task.row_optimizer)
  with jax.set_mesh(run.partitioner.mesh):
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(
        run.state, run.opt_state, batch, jnp.int32(1)).compile()
  m = compiled.memory_analysis()
  peak = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)
  return {"peak_bytes": int(peak), "temp_bytes": int(m.temp_size_in_bytes),
          "argument_bytes": int(m.argument_size_in_bytes)}


def memory_runs(users: int) -> dict[str, dict[int, dict]]:
  out = {}
  for label, window in (("local", 512), ("full", None)):
    out[label] = {}
    for length in LENGTHS:
      config = long_context_foundation_config(length)
      config.data.synthetic.num_users = users
      config.data.dir = os.path.join(ROOT, "data", f"synthetic-long-{users}")
      config.model.window = window
      config.model.num_global = 4 if window else 0
      config.train.batch_size = MEMORY_BATCH
      config.lock()
      out[label][length] = train_step_memory(config)
      print(f"{label} attention @{length}: peak {out[label][length]['peak_bytes'] / 2**20:.0f} MiB",
            flush=True)
  return out


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=150)
  parser.add_argument("--users", type=int, default=1000)
  parser.add_argument("--skip-quality", action="store_true", help="memory table only")
  parser.add_argument("--reuse-memory", action="store_true",
                      help="take the memory table from the last results JSON (compiling the "
                           "full-attention steps takes minutes)")
  args = parser.parse_args()

  if args.reuse_memory:
    with open(os.path.join(RESULTS, "foundation_long_context.json")) as f:
      memory = {label: {int(k): v for k, v in rows.items()}
                for label, rows in json.load(f)["memory"].items()}
  else:
    memory = memory_runs(args.users)
  quality = {}
  if not args.skip_quality:
    with tempfile.TemporaryDirectory() as tmp:
      quality = quality_runs(args.steps, args.users, tmp)

  result = {"steps": args.steps, "users": args.users, "memory_batch": MEMORY_BATCH,
            "memory": {label: {str(k): v for k, v in rows.items()} for label, rows in memory.items()}}
  if quality:
    baseline = quality["SASRec @200"]["test"]["ndcg@10"]
    rows = []
    for name, out in quality.items():
      rows.append([name] + [f"{out['test'][k]:.4f}" for k in KEYS]
                  + [f"{out['test']['ndcg@10'] / baseline - 1:+.1%}", f"{out['seconds']:.0f}"])
    print(f"\nsynthetic-long, {args.users} users; {next(iter(quality.values()))['protocol']}\n")
    print_table(["model"] + KEYS + ["ndcg@10 vs SASRec", "seconds"], rows)
    long_name = "foundation @2048 (window 512 + 4 global)"
    gain = quality[long_name]["test"]["ndcg@10"] / baseline - 1
    print(f"\nbar: foundation @2048 >= +10% NDCG@10 over SASRec @200: {gain:+.1%} "
          f"({'met' if gain >= 0.10 else 'NOT met'})")
    result.update(protocol=next(iter(quality.values()))["protocol"], gain_ndcg10=gain,
                  models={name: {"test": out["test"], "valid": out["valid"],
                                 "seconds": out["seconds"], "best_step": out["best_step"]}
                          for name, out in quality.items()})

  print(f"\npeak training memory (compiled train step, {MEMORY_BATCH} users per step)\n")
  rows = []
  for length in LENGTHS:
    local, full = memory["local"][length], memory["full"][length]
    rows.append([length, f"{local['peak_bytes'] / 2**20:.0f}",
                 f"{local['peak_bytes'] / memory['local'][512]['peak_bytes']:.2f}",
                 f"{full['peak_bytes'] / 2**20:.0f}",
                 f"{full['peak_bytes'] / memory['full'][512]['peak_bytes']:.2f}",
                 f"{length / 512:.0f}"])
  print_table(["context", "local MiB", "local ×512", "full MiB", "full ×512", "length ×512"],
              rows)
  linear = all(memory["local"][n]["peak_bytes"] <= 1.05 * n / 512 * memory["local"][512]["peak_bytes"]
               for n in LENGTHS)
  print(f"\nbar: local-attention memory grows at most linearly: {'met' if linear else 'NOT met'}")
  result["memory_linear"] = linear
  path = write_result("foundation_long_context", result)
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
