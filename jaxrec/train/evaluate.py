"""Evaluate a training workdir's best checkpoint (what `jaxrec eval` runs)."""

from __future__ import annotations

import json
import logging
import os

import jax
import ml_collections
from flax import nnx

from jaxrec.errors import UserError
from jaxrec.eval.list_metrics import ListCollector, list_report
from jaxrec.train.checkpoint import Checkpointer
from jaxrec.train.trainer import Run


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise UserError(f"{workdir} has no config.json: it is not a training workdir. Train with "
                    "`jaxrec train --config configs/FILE.py --workdir DIR` first.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def fit_mesh(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The run's config with a mesh this process can build: a workdir trained on a pod slice
  (mesh (4, 8)) restores onto the devices here, every one on the data axis, when its mesh does
  not fit them. Orbax reshards the checkpoint onto whatever mesh it is given."""
  import jax
  import numpy as np
  fixed = int(np.prod([s for s in config.mesh.shape if s != -1]))
  if jax.device_count() % fixed == 0:
    return config
  logging.info("the run's mesh %s does not fit the %d devices here: restoring onto (-1, 1)",
               tuple(config.mesh.shape), jax.device_count())
  config = ml_collections.ConfigDict(config.to_dict())
  config.mesh.shape = (-1,) + (1,) * (len(config.mesh.axes) - 1)
  return config


def restore_best(workdir: str) -> tuple[Run, int]:
  """The workdir's run with its best checkpoint (by the validation metric) loaded, and its step."""
  config = fit_mesh(load_workdir_config(workdir))
  if config.task == "baseline":
    raise UserError(f"{workdir} holds a {config.model.name} baseline, fitted in closed form: it "
                    "has no checkpoint or embeddings to load. Export a two_tower, sequential or "
                    "bpr workdir.")
  run = Run(config)
  checkpoints = Checkpointer(workdir, config.train.keep_checkpoints, config.train.metric)
  step = checkpoints.best_step() or checkpoints.latest_step()
  if step is None:
    raise UserError(f"{workdir} has no checkpoint yet: let `jaxrec train` run to its first "
                    "evaluation.")
  run.state, _, _ = checkpoints.restore(step, run.state, run.opt_state)
  checkpoints.close()
  return run, step


def evaluate_workdir(workdir: str, split: str = "test") -> dict:
  if split not in ("valid", "test"):
    raise UserError(f"--split must be valid or test, got {split!r}.")
  config = load_workdir_config(workdir)
  if config.task == "baseline":  # closed form: fitted again (deterministic), then evaluated
    from jaxrec.baselines.evaluate import (baseline_list_report, evaluate_baseline,
                                           fitted_baseline, protocol)
    model, ds, _ = fitted_baseline(config)
    lists = ListCollector(ds)
    return {"model": config.model.name, "step": 0,
            **evaluate_baseline(config, split, model, ds, lists), **protocol(ds, split),
            "beyond_accuracy": baseline_list_report(lists, model)}
  run, step = restore_best(workdir)
  lists = ListCollector(run.task.data)
  result = {"model": run.config.model.name, "step": step, **run.evaluate(split, lists=lists),
            **run.task.protocol(split)}
  result["beyond_accuracy"] = run_list_report(run, lists)
  return result


def run_list_report(run: Run, lists: ListCollector) -> dict:
  """list_report of the lists `run.evaluate` collected, on the run's item vectors."""
  item_vectors = None
  if len(lists):
    try:
      item_vectors = jax.device_get(run.task.item_vectors(nnx.merge(run.graphdef, run.state)))
    except NotImplementedError:
      pass
  return list_report(lists, item_vectors)
