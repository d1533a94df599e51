"""Orbax checkpoints of a run: model and optimizer state, the input iterator's position, and the
loop's own counters, so a killed run resumes exactly where it was.

Saves are asynchronous. The last `keep` checkpoints are kept, and the best one by the validation
metric besides. Restoring takes the shardings of the current mesh, so a checkpoint written on 8
devices loads onto 1 and the other way round.
"""

from __future__ import annotations

import json
import os

import jax
from etils import epath
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp

from jaxrec.config import config_json, diff_configs, flatten
from jaxrec.errors import UserError


class Checkpointer:
  def __init__(self, workdir: str, keep: int, metric: str, async_save: bool = True):
    self.metric = metric
    policy = pp.AnyPreservationPolicy([
        pp.LatestN(n=keep),
        pp.BestN(get_metric_fn=lambda metrics: metrics[metric], reverse=False, n=1,
                 keep_checkpoints_without_metrics=False),
    ])
    self.manager = ocp.CheckpointManager(
        epath.Path(workdir if "://" in workdir else os.path.abspath(workdir)) / "checkpoints",
        options=ocp.CheckpointManagerOptions(preservation_policy=policy,
                                             enable_async_checkpointing=async_save),
        item_names=("state", "loop"))

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def best_step(self) -> int | None:
    """The step with the best validation metric, as the loop recorded it in its latest save."""
    latest = self.latest_step()
    if latest is None:
      return None
    loop = self.manager.restore(latest, args=ocp.args.Composite(loop=ocp.args.JsonRestore())).loop
    return loop.get("best_step", latest)

  def save(self, step: int, state, opt_state, loop: dict, metrics: dict | None) -> None:
    self.manager.save(step, args=ocp.args.Composite(
        state=ocp.args.StandardSave({"model": state, "optimizer": opt_state}),
        loop=ocp.args.JsonSave(loop)), metrics=metrics)

  def restore(self, step: int, state, opt_state):
    """Restores onto the shardings of `state`/`opt_state` (arrays or ShapeDtypeStructs)."""
    target = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding),
        {"model": state, "optimizer": opt_state})
    restored = self.manager.restore(step, args=ocp.args.Composite(
        state=ocp.args.StandardRestore(target), loop=ocp.args.JsonRestore()))
    return restored.state["model"], restored.state["optimizer"], restored.loop

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.close()


# Resuming with another config. A workdir's config.json is the config its checkpoints were trained
# with; resuming under a different one (a changed learning rate, a wider model) would either fail
# deep in Orbax or, worse, succeed and leave config.json claiming the new values for the whole run.
# So a resume compares the two first and refuses any difference the user did not accept with
# `--config-changes-ok KEY,...`. An accepted change is appended to config_changes.json (from which
# step, old -> new) once the checkpoint has restored, and config.json then holds the config the run
# continues with: config.json is "the config now", config_changes.json the history of what it was
# before, so neither claims a value for steps it did not hold. One file, appended: the simplest
# record that keeps config.json loadable as a plain config by eval and export.
CONFIG = "config.json"
CHANGES = "config_changes.json"
# Settings that name where files are cached, or which engine prepares a missing data.dir (every
# runner writes the same dataset), not what the run computes.
NOT_COMPARED = ("data.data_dir", "data.runner", "data.beam_options")


def resume_changes(workdir: str, step: int, config, allowed=()) -> dict[str, tuple]:
  """{key: (old, new)} between the workdir's config.json and `config` (after warm_start.resolve
  filled in what it fills in, so the same command gives the same values), with every change in
  `allowed` (keys, or groups such as "optimizer"); a UserError naming the others, old -> new."""
  path = epath.Path(workdir) / CONFIG
  if not path.exists():  # checkpoints without a config.json (written by hand): nothing to compare
    return {}
  old, new = json.loads(path.read_text()), json.loads(config_json(config))
  keys = flatten(old).keys() | flatten(new).keys()
  unknown = [a for a in allowed if not any(_under(k, a) for k in keys)]
  if unknown:
    raise UserError(f"--config-changes-ok {','.join(allowed)}: {', '.join(unknown)} is not a key "
                    f"of this config (give dotted keys, e.g. optimizer.learning_rate).")
  changes = {k: v for k, v in diff_configs(old, new).items()
             if k not in NOT_COMPARED and not _same_path(*v)}
  refused = {k: v for k, v in changes.items() if not any(_under(k, a) for a in allowed)}
  if refused:
    lines = "\n".join(f"  {k}: {o!r} -> {n!r}" for k, (o, n) in refused.items())
    raise UserError(
        f"{workdir} holds a run checkpointed at step {step} under another config; this config "
        f"changes:\n{lines}\nResume with the config it was started with (its {CONFIG}), train in "
        f"a new --workdir, or continue with the new values from step {step} on with "
        f"--config-changes-ok {','.join(refused)} (recorded in {CHANGES}). A change of the "
        "model's sizes (model.dim, ...) cannot restore its checkpoint either way.")
  return changes


def _under(key: str, allowed: str) -> bool:
  return key == allowed or key.startswith(allowed + ".")


def _same_path(a, b) -> bool:
  """Two spellings of one local file or directory (relative and absolute, a symlink)."""
  if not (isinstance(a, str) and isinstance(b, str) and a and b and "://" not in a + b):
    return False
  try:
    return os.path.samefile(a, b)
  except OSError:
    return False


def config_history(workdir: str) -> list:
  """The changes accepted on resumes so far (config_changes.json), oldest first."""
  path = epath.Path(workdir) / CHANGES
  return json.loads(path.read_text()) if path.exists() else []


def changes_record(workdir: str, step: int, changes: dict, git_sha: str) -> str:
  """config_changes.json's text with one more entry: `changes` apply from `step` on."""
  entry = {"from_step": step, "git_sha": git_sha,
           "changes": {k: {"old": o, "new": n} for k, (o, n) in changes.items()}}
  return json.dumps(config_history(workdir) + [entry], indent=2) + "\n"
