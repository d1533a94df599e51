"""Scaling study of the foundation model: quality against model size, context and data size.

    python benchmarks/foundation_scaling.py [--steps 100]

A small one-factor-at-a-time grid around a base point, on a small synthetic-long world (users
with ~1,500 tokens and 20 drifting interests; 4,800 items), sized for a 2-core CPU:
- model size: width 16 / 32 / 64 (2 layers), at context 256 and 400 users;
- context: 64 / 256 / 1,024 tokens (256-token window + 4 attention sinks beyond 256), at width 32;
- data: 100 / 200 / 400 users (the same world; each run is tested on its own users), at width 32
  and context 256.
Every run trains the same number of steps of the same number of tokens (4,096 per step: 16
users of 256 tokens, 64 of 64, 4 of 1,024) with the long-history objective (full softmax, each
user's watched items left out), and is scored by test NDCG@10 of
full ranking over all items with each user's earlier items excluded (leave-one-out). Peak memory
of the compiled train step (XLA's plan, 8 users per step) at context 256, 1,024 and 4,096.
Writes benchmarks/results/foundation_scaling.json and foundation_scaling.png.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import jax
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, ROOT, print_table, write_result  # noqa: E402
from foundation_long_context import train_step_memory  # noqa: E402

from jaxrec.train.defaults import long_context_foundation_config  # noqa: E402
from jaxrec.train.trainer import build_task, train  # noqa: E402

WORLD = {"min_events": 1200, "mean_extra_events": 300, "num_topics": 30,
         "interests_per_user": 20, "items_per_style": 40}
BASE = {"dim": 32, "context": 256, "users": 400}
GRID = {"dim": (16, 32, 64), "context": (64, 256, 1024), "users": (100, 200, 400)}
TOKENS_PER_STEP = 4096
MEMORY_LENGTHS = (256, 1024, 4096)


def build_config(dim: int, context: int, users: int, steps: int = 1):
  config = long_context_foundation_config(context)
  config.data.synthetic.num_users = users
  for key, value in WORLD.items():
    config.data.synthetic[key] = value
  config.data.dir = os.path.join(ROOT, "data", f"synthetic-long-scaling-{users}")
  config.model.dim = dim
  config.model.mlp_dim = 4 * dim
  config.model.num_heads = 2
  # Beyond 256 tokens a 256-token window + 4 attention sinks; below, full attention (the same).
  config.model.window = 256 if context > 256 else None
  config.model.num_global = 4 if context > 256 else 0
  config.model.chunk = 128
  config.train.batch_size = TOKENS_PER_STEP // context
  config.train.num_steps = steps
  config.train.eval_every = steps
  config.train.log_every = max(steps // 4, 1)
  config.train.patience = 0
  config.optimizer.warmup_steps = max(steps // 10, 1)
  config.lock()
  return config


def points() -> list[dict]:
  """The base point, then each factor varied with the others at the base (no duplicates)."""
  out = [dict(BASE)]
  for factor, values in GRID.items():
    for value in values:
      point = {**BASE, factor: value}
      if point not in out:
        out.append(point)
  return out


def count_params(config) -> int:
  """Trainable parameters of the model `config` builds (from shapes; nothing is allocated)."""
  task = build_task(config)
  with nnx.use_eager_sharding(False):  # shapes only: no mesh needed for the sharding annotations
    abstract = nnx.eval_shape(lambda: task.build_model(nnx.Rngs(0)))
  return int(sum(x.size for x in jax.tree.leaves(nnx.state(abstract, nnx.Param))))


def plot(runs: list[dict], memory: dict, path: str) -> None:
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
  for ax, (factor, label) in zip(axes, (("params", "parameters"), ("context", "context (tokens)"),
                                        ("users", "training users"))):
    varied = [r for r in runs if all(r[k] == BASE[k] for k in BASE if k != _factor(factor))]
    varied.sort(key=lambda r: r[factor])
    ax.plot([r[factor] for r in varied], [r["ndcg@10"] for r in varied], "o-")
    ax.set_xscale("log")
    ax.set_xlabel(label)
    ax.set_ylabel("test NDCG@10")
    ax.grid(alpha=0.3)
  lengths = sorted(memory)
  axes[3].plot(lengths, [memory[n]["peak_bytes"] / 2**20 for n in lengths], "o-")
  axes[3].set_xscale("log", base=2)
  axes[3].set_yscale("log", base=2)
  axes[3].set_xlabel("context (tokens)")
  axes[3].set_ylabel("peak train-step memory (MiB)")
  axes[3].grid(alpha=0.3)
  fig.suptitle("foundation model on synthetic-long: quality vs size, context, data; memory")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


def _factor(name: str) -> str:
  return "dim" if name == "params" else name


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--steps", type=int, default=100)
  args = parser.parse_args()
  started = time.perf_counter()

  memory = {}
  for length in MEMORY_LENGTHS:
    config = long_context_foundation_config(length)
    config.data.synthetic.num_users = BASE["users"]
    for key, value in WORLD.items():
      config.data.synthetic[key] = value
    config.data.dir = os.path.join(ROOT, "data", f"synthetic-long-scaling-{BASE['users']}")
    config.model.dim, config.model.mlp_dim, config.model.window = BASE["dim"], 4 * BASE["dim"], 256
    config.train.batch_size = 8
    config.lock()
    memory[length] = train_step_memory(config)
    print(f"memory @{length}: {memory[length]['peak_bytes'] / 2**20:.1f} MiB", flush=True)

  runs = []
  with tempfile.TemporaryDirectory() as tmp:
    for i, point in enumerate(points()):
      config = build_config(**point, steps=args.steps)
      t0 = time.perf_counter()
      out = train(config, os.path.join(tmp, str(i)))
      params = count_params(config)  # after train: the dataset is prepared by then
      runs.append({**point, "params": params, "ndcg@10": out["test"]["ndcg@10"],
                   "recall@10": out["test"]["recall@10"], "seconds": time.perf_counter() - t0,
                   "test_users": out["test"]["num_users"]})
      print(f"{point} params {params}: test ndcg@10 {out['test']['ndcg@10']:.4f} "
            f"({runs[-1]['seconds']:.0f} s)", flush=True)
      protocol = out["protocol"]

  print(f"\nfoundation scaling on synthetic-long ({args.steps} steps of {TOKENS_PER_STEP} tokens); "
        f"{protocol}\n")
  print_table(["width", "params", "context", "users", "ndcg@10", "recall@10", "seconds"],
              [[r["dim"], r["params"], r["context"], r["users"], f"{r['ndcg@10']:.4f}",
                f"{r['recall@10']:.4f}", f"{r['seconds']:.0f}"] for r in runs])
  print("\npeak train-step memory (8 users per step, 256-token window)\n")
  print_table(["context", "MiB", "×256", "length ×256"],
              [[n, f"{memory[n]['peak_bytes'] / 2**20:.1f}",
                f"{memory[n]['peak_bytes'] / memory[256]['peak_bytes']:.2f}", f"{n // 256}"]
               for n in MEMORY_LENGTHS])
  png = os.path.join(RESULTS, "foundation_scaling.png")
  os.makedirs(RESULTS, exist_ok=True)
  plot(runs, memory, png)
  path = write_result("foundation_scaling", {
      "protocol": protocol, "steps": args.steps, "tokens_per_step": TOKENS_PER_STEP,
      "world": WORLD, "base": BASE, "runs": runs,
      "memory": {str(n): m for n, m in memory.items()},
      "total_seconds": time.perf_counter() - started})
  print(f"\nwrote {path} and {png} ({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
  main()
