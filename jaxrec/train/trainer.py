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
from flax import nnx

from jaxrec.baselines.evaluate import fit_baseline
from jaxrec.config import check_config, config_json
from jaxrec.errors import UserError
from jaxrec.eval.metrics.lists import ListCollector
from jaxrec.parallel.partitioner import Partitioner
from jaxrec.train.checkpoint import (CHANGES, CONFIG, Checkpointer, changes_record,
                                    config_history, resume_changes)
from jaxrec.train.evaluate import list_report_of
from jaxrec.train.evaluator import Evaluator
from jaxrec.train.optim import build_optimizer, learning_rate_schedule
from jaxrec.train.step import NonFiniteGuard, make_train_step, trainable
from jaxrec.train import warm_start
from jaxrec.train.tasks import BASELINE, build_task


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
    self.evaluator = Evaluator(self.task, self.partitioner, self.graphdef, shardings)

  def evaluate(self, split: str, row_weight=None, lists=None) -> dict:
    """The current state's metrics over a split (evaluate.Evaluator)."""
    return self.evaluator(self.state, split, row_weight, lists)


def train(config, workdir: str, config_changes_ok=()) -> dict:
  """Trains `config` in `workdir`, resuming its latest checkpoint if it has one. A resume under a
  config that differs from the workdir's config.json is refused unless every changed key is in
  `config_changes_ok` (checkpoint.resume_changes; accepted ones go to config_changes.json)."""
  check_config(config)
  if config.task == BASELINE:  # fitted in closed form: no training loop
    return fit_baseline(config, workdir)
  warm_start.resolve(config)  # before config.json: it records the data cut-off it fills in
  cfg = config.train
  checkpoints = Checkpointer(workdir, cfg.keep_checkpoints, cfg.metric)
  if (latest := checkpoints.latest_step()) is None:  # a fresh run: its config before it trains
    _write(workdir, CONFIG, config_json(config))
    _write(workdir, "git_sha.txt", git_sha() + "\n")
  else:  # a resume: compared now, written only once the checkpoint has restored
    try:
      changes = resume_changes(workdir, latest, config, tuple(config_changes_ok))
    except UserError:
      checkpoints.close()
      raise
  run = Run(config)
  iterator = iter(run.task.train_data(config.seed))
  loop = {"step": 0, "best": None, "best_step": None, "evals_since_best": 0, "skipped": 0,
          "history": []}
  if latest is not None:
    try:
      run.state, run.opt_state, loop = checkpoints.restore(latest, run.state, run.opt_state)
    except (ValueError, TypeError, KeyError) as e:
      if not changes:
        raise
      raise UserError(f"the checkpoint at step {latest} in {workdir} does not restore under the "
                      f"accepted changes ({', '.join(changes)}): {type(e).__name__}: "
                      f"{str(e).splitlines()[0] if str(e) else ''} {CONFIG} is unchanged; resume "
                      "without those changes, or train this config in a new --workdir.") from e
    iterator.set_state(loop["data"])
    if changes:
      _write(workdir, CHANGES, changes_record(workdir, latest, changes, git_sha()))
    _write(workdir, CONFIG, config_json(config))
    _write(workdir, "git_sha.txt", git_sha() + "\n")
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
  lists = ListCollector(run.task.data)
  results = {"best_step": best_step, "last_step": step, "skipped_steps": guard.skipped,
             f"valid_{cfg.metric}_history": loop["history"],
             "valid": valid, "test": run.evaluate("test", lists=lists),
             **run.task.protocol("test"), "beyond_accuracy": list_report_of(run.task, run.graphdef, run.state, lists)}
  if history := config_history(workdir):  # config.json holds the latest values only
    results["config_changes"] = history
  checkpoints.close()
  _write(workdir, "results.json", json.dumps(results, indent=2))
  return results
