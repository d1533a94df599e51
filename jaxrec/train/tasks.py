"""Tasks by name: `config.task` names the Task (task.py) a run trains.

The registry holds import paths, not classes, so building one task imports only its own module
(serving a two-tower does not import the foundation model), and a task module may itself restore
another run's model (the ranker's user encoder) without an import cycle. Register a task of your
own with `register_task("name", "package.module:Class")`.
"""

from __future__ import annotations

import importlib

from jaxrec.errors import UserError

BASELINE = "baseline"  # fitted in closed form (jaxrec/baselines): no Task, no training loop
_TASKS = {
    "sequential": "jaxrec.train.sequential:SequentialTask",
    "two_tower": "jaxrec.train.two_tower:TwoTowerTask",
    "ranking": "jaxrec.train.ranking:RankingTask",
    "bpr": "jaxrec.train.matrix_factorization:BPRTask",
    "foundation": "jaxrec.train.foundation:FoundationTask",
}


def register_task(name: str, target: str) -> None:
  """Makes `config.task = name` build the class at `target` ("package.module:Class")."""
  if name == BASELINE or ":" not in target:
    raise UserError(f"register_task({name!r}, {target!r}): the name {BASELINE!r} is taken and "
                    "the target is 'package.module:Class'.")
  _TASKS[name] = target


def task_names() -> list[str]:
  return [*_TASKS, BASELINE]


def build_task(config):
  """The Task that `config.task` names, built from the config."""
  target = _TASKS.get(config.task)
  if target is None:
    raise UserError(f"unknown task {config.task!r}: use one of {task_names()}"
                    + (" (baselines are fitted, not built as a task)."
                       if config.task == BASELINE else "."))
  module, name = target.split(":")
  cls = getattr(importlib.import_module(module), name)
  if config.get("data", {}).get("shuffle_ties", False) and not getattr(cls, "SHUFFLES_TIES", False):
    raise UserError(f"data.shuffle_ties reorders next-item training windows, which task "
                    f"{config.task!r} does not train on: leave it off (sequential, foundation).")
  return cls(config)
