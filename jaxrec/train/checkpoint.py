"""Orbax checkpoints of a run: model and optimizer state, the input iterator's position, and the
loop's own counters, so a killed run resumes exactly where it was.

Saves are asynchronous. The last `keep` checkpoints are kept, and the best one by the validation
metric besides. Restoring takes the shardings of the current mesh, so a checkpoint written on 8
devices loads onto 1 and the other way round.
"""

from __future__ import annotations

import os

import jax
from etils import epath
import orbax.checkpoint as ocp
from orbax.checkpoint.checkpoint_managers import preservation_policy as pp


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
