"""Training step time against embedding table size: sparse row updates vs the dense optax update.

    python benchmarks/embedding_update.py [--rows 100000,10000000] [--steps 20]

A ranking model whose 26 sparse features share one 64-wide table (4096 examples per batch:
106,496 lookups a step) followed by DLRM's dot interaction, a 256-128 top MLP and a click head,
trained by jaxrec's train step. Sparse: the table is updated by row-wise Adagrad on the rows the
batch touched (jaxrec.models.row_optimizers), the MLPs by Adam. Dense: the same model with the table
an ordinary parameter, updated by optax Adagrad over every row (the MLPs by Adam), which is what
differentiating through the lookup and handing the gradient to optax costs. The two tables sizes
run in the same process; steps are timed after compilation and one warm-up step.

Target (from the issue): sparse step time at 10M rows <= 1.5 x at 100k rows.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, write_result  # noqa: E402

from jaxrec.models.dlrm import MLP  # noqa: E402
from jaxrec.models.embedding import ShardedEmbedding  # noqa: E402
from jaxrec.parallel.partitioner import Partitioner  # noqa: E402
from jaxrec.models.row_optimizers import RowOptimizer  # noqa: E402
from jaxrec.train.step import make_train_step, trainable  # noqa: E402

BATCH, FEATURES, DIM = 4096, 26, 64
LEARNING_RATE = 0.05


class SharedTableRanker(nnx.Module):
  def __init__(self, rows: int, row_optimizer, *, rngs):
    self.tables = nnx.Dict({"ids": ShardedEmbedding(rows, DIM, rngs=rngs,
                                                    row_optimizer=row_optimizer)})
    pairs = FEATURES * (FEATURES - 1) // 2
    self.top = MLP((pairs, 256, 128), rngs=rngs)
    self.head = nnx.Linear(128, 1, rngs=rngs)

  def embedding_ids(self, batch):
    return {"ids": batch["ids"]}

  def __call__(self, batch, rows=None):
    x = rows["ids"] if rows is not None else self.tables["ids"](batch["ids"])  # [B, F, D]
    dots = jnp.einsum("bfd,bgd->bfg", x, x)
    upper = jnp.triu_indices(FEATURES, k=1)
    return self.head(self.top(dots[:, upper[0], upper[1]]))[:, 0]


def loss_fn(model, batch, key, rows=None):
  return jnp.mean(optax.sigmoid_binary_cross_entropy(model(batch, rows), batch["label"]))


def batches(rows: int, count: int):
  """Zipf-distributed ids, as real id features are: a few hot rows, a long tail."""
  rng = np.random.default_rng(0)
  for _ in range(count):
    ids = np.minimum(rng.zipf(1.2, (BATCH, FEATURES)), rows) - 1
    yield {"ids": ids.astype(np.int32), "label": rng.integers(0, 2, BATCH).astype(np.float32)}


def time_steps(rows: int, sparse: bool, steps: int) -> dict:
  partitioner = Partitioner((1, 1), devices=jax.devices()[:1])
  row_optimizer = RowOptimizer("rowwise_adagrad", LEARNING_RATE) if sparse else None
  graphdef, state, _ = partitioner.init(
      lambda: SharedTableRanker(rows, row_optimizer, rngs=nnx.Rngs(0)))
  # Dense: optax Adagrad on the table (the same rule, per element), Adam on the MLPs.
  tx = optax.multi_transform(
      {"table": optax.adagrad(LEARNING_RATE), "mlp": optax.adam(1e-3)},
      lambda params: jax.tree_util.tree_map_with_path(
          lambda path, _: "table" if "tables" in jax.tree_util.keystr(path) else "mlp", params))
  opt_state = tx.init(trainable(state))
  step = partitioner.jit(make_train_step(graphdef, tx, loss_fn, 0, row_optimizer),
                         donate_argnums=(0, 1))
  data = [jax.device_put(b) for b in batches(rows, steps + 2)]
  started = time.perf_counter()
  state, opt_state, out = step(state, opt_state, data[0], jnp.int32(0))
  jax.block_until_ready(out["loss"])
  compile_seconds = time.perf_counter() - started
  state, opt_state, out = step(state, opt_state, data[1], jnp.int32(1))  # warm-up
  jax.block_until_ready(state)
  times = []
  for i, batch in enumerate(data[2:]):
    started = time.perf_counter()
    state, opt_state, out = step(state, opt_state, batch, jnp.int32(i + 2))
    jax.block_until_ready((state, opt_state))
    times.append(time.perf_counter() - started)
  assert bool(out["finite"]), "the benchmark's training went non-finite"
  return {"median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times),
          "compile_seconds": compile_seconds, "loss": float(out["loss"])}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--rows", default="100000,10000000")
  parser.add_argument("--steps", type=int, default=20)
  args = parser.parse_args()
  sizes = [int(r) for r in args.rows.split(",")]
  results = {}
  for update in ("sparse", "dense"):
    for rows in sizes:
      results[f"{update}/{rows}"] = time_steps(rows, update == "sparse", args.steps)
      print(f"{update:6} {rows:>10,} rows: {results[f'{update}/{rows}']['median_ms']:.1f} ms/step",
            flush=True)
  small, large = sizes[0], sizes[-1]
  ratio = {u: results[f"{u}/{large}"]["median_ms"] / results[f"{u}/{small}"]["median_ms"]
           for u in ("sparse", "dense")}
  print(f"\nstep time, {BATCH} examples x {FEATURES} features into one {DIM}-wide table "
        f"(median of {args.steps} steps, {jax.devices()[0].platform}, {os.cpu_count()} cores)")
  print_table(["update", *[f"{r:,} rows" for r in sizes], f"{large:,} / {small:,}"],
              [[u, *[f"{results[f'{u}/{r}']['median_ms']:.1f} ms" for r in sizes],
                f"{ratio[u]:.2f}x"] for u in ("sparse", "dense")])
  print(f"\ndense / sparse at {large:,} rows: "
        f"{results[f'dense/{large}']['median_ms'] / results[f'sparse/{large}']['median_ms']:.1f}x")
  print("wrote", write_result("embedding_update", {
      "batch": BATCH, "features": FEATURES, "dim": DIM, "steps": args.steps, "results": results,
      "ratio_large_to_small": ratio, "target_sparse_ratio": 1.5}))


if __name__ == "__main__":
  main()
