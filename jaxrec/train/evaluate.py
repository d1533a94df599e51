"""`jaxrec eval`: a workdir's best checkpoint (the model alone: no optimizer, no train step)
evaluated on a split, with its protocol and beyond-accuracy report.

`--config.eval.*` overrides change how the restored model is evaluated, never the model: e.g.
`--config.eval.exclude_seen=False` scores a workdir trained under the default protocol under
RecBole's sequential one, and `--config.eval.max_targets=0` every interaction of the window,
without retraining. Other keys would describe a different model and are refused."""

from __future__ import annotations

import jax
from flax import nnx

from jaxrec.baselines.evaluate import (baseline_list_report, baseline_report, evaluate_baseline,
                                       fitted_baseline, protocol)
from jaxrec.config import apply_overrides
from jaxrec.errors import UserError
from jaxrec.eval.metrics.lists import ListCollector, list_report
from jaxrec.train.restore import load_workdir_config, restore_model
from jaxrec.train.defaults import sequential_config
from jaxrec.train.tasks import BASELINE

EVAL_PREFIX = "eval."


def with_eval_overrides(config, overrides) -> object:
  """A workdir's config with `overrides` ("eval.key=value") applied; eval settings added since
  the workdir was written take their defaults first, so they can be set too."""
  overrides = list(overrides)
  wrong = [o for o in overrides if not o.startswith(EVAL_PREFIX)]
  if wrong:
    raise UserError(f"`jaxrec eval` accepts --config.eval.* overrides only (how the trained model "
                    f"is evaluated), got --config.{wrong[0].partition('=')[0]}; other settings "
                    "change the model: train again with `jaxrec train ... --config.KEY=VALUE`.")
  if "eval" in config:
    for key, value in sequential_config().eval.items():
      if key not in config.eval:
        config.eval[key] = value
  return apply_overrides(config, overrides)


def evaluate_workdir(workdir: str, split: str = "test", overrides=()) -> dict:
  """`overrides`: "eval.key=value" settings of the evaluation (with_eval_overrides)."""
  if split not in ("valid", "test"):
    raise UserError(f"--split must be valid or test, got {split!r}.")
  config = with_eval_overrides(load_workdir_config(workdir), overrides)
  changed = {"eval_overrides": list(overrides)} if overrides else {}
  if config.task == BASELINE:  # closed form: fitted again (deterministic), then evaluated
    model, ds, _ = fitted_baseline(config)
    lists = ListCollector(ds)
    return {"model": config.model.name, "step": 0, **changed,
            **evaluate_baseline(config, split, model, ds, lists),
            **protocol(ds, split, config.eval), **baseline_report(model),
            "beyond_accuracy": baseline_list_report(lists, model)}
  model = restore_model(workdir, config)
  lists = ListCollector(model.task.data)
  result = {"model": model.config.model.name, "step": model.step, **changed,
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
