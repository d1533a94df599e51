"""Foundation-model train step time under sampled softmax as the catalogue grows: every item's
vector each step (before) against the vectors of the step's own items only (now).

    python benchmarks/foundation_sampled_step.py [--items 200000,1000000] [--steps 10]

configs/synthetic_foundation.py (sampled softmax, 512 negatives per horizon step, horizon 2,
genre and event-type heads) made small: width 32, 50 tokens, 64 users a step, on a synthetic log
of 2,000 users and 200,000 events whose catalogue holds `--items` items (most never interacted
with, as in a real catalogue's long tail). Three losses, each through the trainer's own jitted
step (AdamW included), in the same process:

- all items, categorical: the step before this change: every item's vector (id + metadata), and
  negatives by jax.random.categorical, which draws K x V Gumbel numbers;
- all items, alias sampler: every item's vector, negatives from a Walker alias table (O(K));
- step items (jaxrec now): the vectors of the inputs, targets and negatives only.

The optimizer still updates the whole id-embedding table densely (AdamW), which is O(V) and is
what remains of the catalogue's cost; the DLRM's row-wise sparse update is not used here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import jax
import jax.numpy as jnp
from flax import nnx

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, print_table, write_result  # noqa: E402

from jaxrec.config import apply_overrides, load_config  # noqa: E402
from jaxrec.train.losses import sampled_softmax_nll, sampled_softmax_nll_of  # noqa: E402
from jaxrec.train.trainer import Run, build_task  # noqa: E402

LOSSES = ("all items, categorical", "all items, alias sampler", "step items (jaxrec)")


def catalogue_loss(task, sampler: str):
  """The foundation loss computed from every item's vector, negatives drawn by `sampler`."""
  def loss(model, batch, key):
    dropout_key, sample_key, id_key = jax.random.split(key, 3)
    keep, learn = task.id_masks(id_key)
    items = model.item_vectors(task._metadata(), keep, learn)
    hidden = model(batch["inputs"], task._fields(batch), items, rngs=nnx.Rngs(dropout=dropout_key))
    log_q, k = jnp.asarray(task.log_q), task.config.loss.num_negatives
    if sampler == "categorical":
      nll = lambda query, step, targets: sampled_softmax_nll(
          query, targets, items, jax.random.fold_in(sample_key, step), k, log_q)
    else:
      negatives = task.sample_negatives(sample_key)
      nll = lambda query, step, targets: sampled_softmax_nll_of(
          query, targets, items[targets], negatives[step], items[negatives[step]], log_q)
    return task.weighted_objective(model, hidden, batch, nll)
  return loss


def config_for(items: int, data_root: str):
  config = load_config(os.path.join(ROOT, "configs", "synthetic_foundation.py"))
  return apply_overrides(config, [
      f"data.dir={os.path.join(data_root, f'synthetic-catalogue-{items}')}",
      f"data.synthetic.num_items={items}", "data.synthetic.num_users=2000",
      "data.synthetic.num_events=200000", "model.dim=32", "model.mlp_dim=64",
      "model.max_len=50", "train.batch_size=64", "train.num_steps=1000"])


def time_steps(config, loss_name: str, steps: int) -> dict:
  task = build_task(config)
  if loss_name != LOSSES[-1]:
    task.loss = catalogue_loss(task, "categorical" if "categorical" in loss_name else "alias")
  run = Run(config, task)
  data = iter(task.train_data(0))
  batches = [run.partitioner.shard_inputs(next(data)) for _ in range(steps + 2)]
  state, opt_state = run.state, run.opt_state
  started = time.perf_counter()
  state, opt_state, out = run.train_step(state, opt_state, batches[0], jnp.int32(0))
  jax.block_until_ready(out["loss"])
  compile_seconds = time.perf_counter() - started
  state, opt_state, out = run.train_step(state, opt_state, batches[1], jnp.int32(1))  # warm-up
  jax.block_until_ready(state)
  times, losses = [], []
  for i, batch in enumerate(batches[2:]):
    started = time.perf_counter()
    state, opt_state, out = run.train_step(state, opt_state, batch, jnp.int32(i + 2))
    jax.block_until_ready((state, opt_state))
    times.append(time.perf_counter() - started)
    losses.append(float(out["loss"]))
  return {"median_ms": 1000 * statistics.median(times), "min_ms": 1000 * min(times),
          "compile_seconds": compile_seconds, "mean_loss": sum(losses) / len(losses),
          "num_items": task.data.num_items}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--items", default="200000,1000000")
  parser.add_argument("--steps", type=int, default=10)
  parser.add_argument("--data-root", default=os.path.join(ROOT, "data"))
  parser.add_argument("--categorical-up-to", type=int, default=200_000,
                      help="time the categorical sampler only at catalogues up to this size (at "
                           "200k items it already takes tens of seconds a step on 2 cores)")
  parser.add_argument("--result-name", default="foundation_sampled_step")
  args = parser.parse_args()
  sizes = [int(x) for x in args.items.split(",")]
  results = {}
  for items in sizes:
    config = config_for(items, args.data_root)
    for name in LOSSES:
      if "categorical" in name and items > args.categorical_up_to:
        continue
      results[f"{name}/{items}"] = r = time_steps(config, name, args.steps)
      print(f"{name:24} {items:>9,} items: {r['median_ms']:.1f} ms/step "
            f"(loss {r['mean_loss']:.3f})", flush=True)
  print(f"\nfoundation train step, sampled softmax (median of {args.steps} steps, "
        f"{jax.devices()[0].platform}, {os.cpu_count()} cores)")
  ms = lambda name, items: results.get(f"{name}/{items}", {}).get("median_ms", float("nan"))
  print_table(["item vectors / sampler", *[f"{n:,} items" for n in sizes]],
              [[name, *[f"{ms(name, n):.1f} ms" if f"{name}/{n}" in results else "not run"
                        for n in sizes]] for name in LOSSES])
  speedup = {f"{name} / now @ {n}": ms(name, n) / ms(LOSSES[-1], n)
             for name in LOSSES[:-1] for n in sizes if f"{name}/{n}" in results}
  print("\n" + "\n".join(f"{k}: {v:.1f}x" for k, v in speedup.items()))
  print("wrote", write_result(args.result_name, {
      "config": "configs/synthetic_foundation.py, dim 32, mlp 64, max_len 50, batch 64, "
                "512 negatives x horizon 2",
      "steps": args.steps, "results": results, "speedup_before_over_now": speedup}))


if __name__ == "__main__":
  main()
