"""The one training loop. Every model plugs in through a `Task` (task.py).

Per step: shard the host batch over the mesh's data axis, run the jitted pure step over
nnx.split state (explicit in/out shardings, donated buffers), skip non-finite updates. Periodically:
evaluate on the validation split, write clu metrics (TensorBoard and log), save an Orbax
checkpoint that includes the input iterator's position, and stop early when the validation
metric has not improved for `patience` evaluations. At the end, the best checkpoint is evaluated
on the test split and the results written to `results.json`.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess

import jax
import jax.numpy as jnp
import optax
from clu import metric_writers, periodic_actions
from etils import epath
from jax.experimental import multihost_utils
from flax import nnx

from jaxrec.config import config_json
from jaxrec.errors import UserError
from jaxrec.eval.metrics import TOP_ITEMS
from jaxrec.parallel.partitioner import Partitioner
from jaxrec.train.checkpoint import Checkpointer
from jaxrec.train.optim import build_optimizer, learning_rate_schedule
from jaxrec.train.step import NonFiniteGuard, make_train_step, trainable
from jaxrec.train import warm_start


def build_task(config):
  if config.task == "sequential":
    from jaxrec.train.sequential import SequentialTask
    return SequentialTask(config)
  if config.task == "two_tower":
    from jaxrec.train.two_tower import TwoTowerTask
    return TwoTowerTask(config)
  if config.task == "ranking":
    from jaxrec.train.ranking import RankingTask
    return RankingTask(config)
  if config.task == "bpr":
    from jaxrec.train.matrix_factorization import BPRTask
    return BPRTask(config)
  if config.task == "foundation":
    from jaxrec.train.foundation import FoundationTask
    return FoundationTask(config)
  raise UserError(f"unknown task {config.task!r}: use 'sequential', 'two_tower', 'ranking', "
                  "'bpr', 'foundation' or 'baseline'.")


def _write(workdir: str, name: str, text: str) -> None:
  """Writes a run file (local or gs:// workdir) once, from the first process of a pod."""
  if jax.process_index() == 0:
    path = epath.Path(workdir)
    path.mkdir(parents=True, exist_ok=True)
    (path / name).write_text(text)


def git_sha() -> str:
  """The code's commit; a pod worker's copy has no .git, so the launcher passes it along."""
  if os.environ.get("JAXREC_GIT_SHA"):
    return os.environ["JAXREC_GIT_SHA"]
  try:
    return subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                          cwd=os.path.dirname(os.path.abspath(__file__)), check=True).stdout.strip()
  except (OSError, subprocess.CalledProcessError):
    return "unknown"


class Run:
  """A task's model and optimizer state on the mesh, with its jitted train and eval steps."""

  def __init__(self, config, task=None):
    self.config = config
    self.task = task or build_task(config)
    self.partitioner = Partitioner(tuple(config.mesh.shape), tuple(config.mesh.axes),
                                   dict(config.mesh.rules))
    self.partitioner.check_batch_size(config.train.batch_size)
    self.partitioner.check_batch_size(config.eval.batch_size)
    self.graphdef, self.state, shardings = self.partitioner.init(
        lambda: self.task.build_model(nnx.Rngs(config.seed)))
    self.tx = warm_start.with_freezing(
        config, build_optimizer(config.optimizer, config.train.num_steps), trainable(self.state))
    replicated = self.partitioner.replicated
    # Optimizer moments follow their parameters; counters and other scalars are replicated.
    opt_shardings = optax.tree_map_params(
        self.tx, lambda _, sharding: sharding, jax.eval_shape(self.tx.init, trainable(self.state)),
        trainable(shardings), transform_non_params=lambda _: replicated)
    self.opt_state = jax.jit(self.tx.init, out_shardings=opt_shardings)(trainable(self.state))
    data = self.partitioner.data_sharding
    self.train_step = self.partitioner.jit(
        make_train_step(self.graphdef, self.tx, self.task.loss, config.seed,
                        self.task.row_optimizer),
        in_shardings=(shardings, opt_shardings, data, replicated),
        out_shardings=(shardings, opt_shardings, replicated), donate_argnums=(0, 1))
    self.eval_shared = self.partitioner.jit(
        lambda state: self.task.eval_shared(nnx.merge(self.graphdef, state)),
        in_shardings=(shardings,))
    # The shared values keep the placement eval_shared gave them.
    self.eval_step = self.partitioner.jit(
        lambda state, batch, shared: self.task.eval_step(nnx.merge(self.graphdef, state), batch,
                                                         shared),
        out_shardings=replicated)

  def evaluate(self, split: str, row_weight=None, lists=None) -> dict:
    """Mean metrics over a split's users; `row_weight(batch) -> [B]` restricts them (e.g. to
    users whose held-out item is new). `lists` (eval/list_metrics.ListCollector) gathers the
    top-k list the eval step ranked for each user, when the task ranks the catalogue."""
    accumulator = self.task.metric_accumulator()
    shared = self.eval_shared(self.state)
    for batch in self.task.eval_batches(split):
      weight = batch.pop("weight")
      if row_weight is not None:
        weight = weight * row_weight(batch)
      host_batch, batch = batch, self.partitioner.shard_inputs(batch)
      if jax.process_count() > 1:  # the outputs cover every process's rows
        weight = multihost_utils.process_allgather(weight, tiled=True)
      out = jax.device_get(self.eval_step(self.state, batch, shared))
      top_items = out.pop(TOP_ITEMS, None)
      if lists is not None and top_items is not None:
        lists.add(top_items, host_batch, weight)
      accumulator.add(out, weight)
    return accumulator.result()


def train(config, workdir: str) -> dict:
  if config.task == "baseline":  # fitted in closed form: no training loop
    from jaxrec.baselines.evaluate import fit_baseline
    return fit_baseline(config, workdir)
  warm_start.resolve(config)  # before config.json: it records the data cut-off it fills in
  _write(workdir, "config.json", config_json(config))
  _write(workdir, "git_sha.txt", git_sha() + "\n")
  run = Run(config)
  cfg = config.train
  iterator = iter(run.task.train_data(config.seed))
  checkpoints = Checkpointer(workdir, cfg.keep_checkpoints, cfg.metric)
  loop = {"step": 0, "best": None, "best_step": None, "evals_since_best": 0, "skipped": 0,
          "history": []}
  if (latest := checkpoints.latest_step()) is not None:
    run.state, run.opt_state, loop = checkpoints.restore(latest, run.state, run.opt_state)
    iterator.set_state(loop["data"])
    logging.info("resumed from step %d", latest)
  elif config.train.get("init_from"):
    _write(workdir, "warm_start.json", json.dumps(warm_start.warm_start(run, config.train.init_from),
                                                  indent=2))

  writer = metric_writers.create_default_writer(workdir, just_logging=jax.process_index() > 0)
  report = periodic_actions.ReportProgress(num_train_steps=cfg.num_steps, writer=writer,
                                           every_steps=cfg.log_every)
  schedule = learning_rate_schedule(config.optimizer, cfg.num_steps)
  guard = NonFiniteGuard(cfg.max_nonfinite_in_a_row, loop["skipped"])
  step = loop["step"]
  last_valid = None
  try:
    while step < cfg.num_steps:
      step += 1
      batch = run.partitioner.shard_inputs(next(iterator))
      run.state, run.opt_state, out = run.train_step(run.state, run.opt_state, batch,
                                                     jnp.int32(step))
      guard.update(bool(out["finite"]), step)
      report(step)
      if step % cfg.log_every == 0:
        writer.write_scalars(step, {"train/loss": float(out["loss"]),
                                    "train/grad_norm": float(out["grad_norm"]),
                                    "train/learning_rate": float(schedule(step)),
                                    "train/skipped_steps": guard.skipped})
        print(f"step {step}/{cfg.num_steps}  loss {float(out['loss']):.4f}", flush=True)
      if step % cfg.eval_every == 0 or step == cfg.num_steps:
        metrics = last_valid = run.evaluate("valid")
        writer.write_scalars(step, {f"valid/{k}": v for k, v in metrics.items()})
        print(f"step {step}/{cfg.num_steps}  valid {cfg.metric} {metrics[cfg.metric]:.4f}",
              flush=True)
        value = metrics[cfg.metric]
        improved = loop["best"] is None or value > loop["best"]
        loop["history"].append([step, value])
        loop.update(step=step, best=value if improved else loop["best"],
                    best_step=step if improved else loop["best_step"],
                    evals_since_best=0 if improved else loop["evals_since_best"] + 1,
                    skipped=guard.skipped, data=iterator.get_state())
        checkpoints.save(step, run.state, run.opt_state, loop, metrics)
        if cfg.patience and loop["evals_since_best"] >= cfg.patience:
          logging.info("early stop at step %d: no better %s for %d evaluations", step, cfg.metric,
                       cfg.patience)
          break
  finally:
    checkpoints.wait()
    writer.flush()

  best_step = checkpoints.best_step() or step
  if best_step != step:
    run.state, _, _ = checkpoints.restore(best_step, run.state, run.opt_state)
  # The last evaluation's metrics are the best checkpoint's when it is the last one.
  valid = last_valid if best_step == loop["step"] and last_valid else run.evaluate("valid")
  from jaxrec.eval.list_metrics import ListCollector
  from jaxrec.train.evaluate import run_list_report
  lists = ListCollector(run.task.data)
  results = {"best_step": best_step, "last_step": step, "skipped_steps": guard.skipped,
             f"valid_{cfg.metric}_history": loop["history"],
             "valid": valid, "test": run.evaluate("test", lists=lists),
             **run.task.protocol("test"), "beyond_accuracy": run_list_report(run, lists)}
  checkpoints.close()
  _write(workdir, "results.json", json.dumps(results, indent=2))
  return results
