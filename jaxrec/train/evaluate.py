"""`jaxrec eval`: a workdir's best checkpoint (the model alone: no optimizer, no train step)
evaluated on a split, with its protocol and beyond-accuracy report."""

from __future__ import annotations

import jax
from flax import nnx

from jaxrec.baselines.evaluate import (baseline_list_report, evaluate_baseline, fitted_baseline,
                                       protocol)
from jaxrec.errors import UserError
from jaxrec.eval.metrics.lists import ListCollector, list_report
from jaxrec.train.restore import load_workdir_config, restore_model
from jaxrec.train.tasks import BASELINE


def evaluate_workdir(workdir: str, split: str = "test") -> dict:
  if split not in ("valid", "test"):
    raise UserError(f"--split must be valid or test, got {split!r}.")
  config = load_workdir_config(workdir)
  if config.task == BASELINE:  # closed form: fitted again (deterministic), then evaluated
    model, ds, _ = fitted_baseline(config)
    lists = ListCollector(ds)
    return {"model": config.model.name, "step": 0,
            **evaluate_baseline(config, split, model, ds, lists), **protocol(ds, split),
            "beyond_accuracy": baseline_list_report(lists, model)}
  model = restore_model(workdir)
  lists = ListCollector(model.task.data)
  result = {"model": model.config.model.name, "step": model.step,
            **model.evaluate(split, lists=lists), **model.task.protocol(split)}
  result["beyond_accuracy"] = list_report_of(model.task, model.graphdef, model.state, lists)
  return result


def list_report_of(task, graphdef, state, lists: ListCollector) -> dict:
  """list_report of the lists an evaluation collected, on the model's item vectors."""
  item_vectors = None
  if len(lists):
    try:
      item_vectors = jax.device_get(task.item_vectors(nnx.merge(graphdef, state)))
    except NotImplementedError:
      pass
  return list_report(lists, item_vectors)
