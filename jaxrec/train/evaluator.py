"""A task's jitted evaluation of a model state over a split: the training loop's validation and
every restored model's (restore.TrainedModel.evaluate) share it."""

from __future__ import annotations

import jax
from jax.experimental import multihost_utils
from flax import nnx

from jaxrec.eval.metrics.ranking import TOP_ITEMS


class Evaluator:
  """A task's jitted evaluation of a model state over a split, compiled once."""

  def __init__(self, task, partitioner, graphdef, shardings=None):
    self.task, self.partitioner = task, partitioner
    self.eval_shared = partitioner.jit(
        lambda state: task.eval_shared(nnx.merge(graphdef, state)),
        **({"in_shardings": (shardings,)} if shardings is not None else {}))
    # The shared values keep the placement eval_shared gave them.
    self.eval_step = partitioner.jit(
        lambda state, batch, shared: task.eval_step(nnx.merge(graphdef, state), batch, shared),
        out_shardings=partitioner.replicated)

  def __call__(self, state, split: str, row_weight=None, lists=None) -> dict:
    """Mean metrics over a split's users; `row_weight(batch) -> [B]` restricts them (e.g. to
    users whose held-out item is new). `lists` (eval/list_metrics.ListCollector) gathers the
    top-k list the eval step ranked for each user, when the task ranks the catalogue."""
    accumulator = self.task.metric_accumulator()
    shared = self.eval_shared(state)
    for batch in self.task.eval_batches(split):
      weight = batch.pop("weight")
      if row_weight is not None:
        weight = weight * row_weight(batch)
      host_batch, batch = batch, self.partitioner.shard_inputs(batch)
      if jax.process_count() > 1:  # the outputs cover every process's rows
        weight = multihost_utils.process_allgather(weight, tiled=True)
      out = jax.device_get(self.eval_step(state, batch, shared))
      top_items = out.pop(TOP_ITEMS, None)
      if lists is not None and top_items is not None:
        lists.add(top_items, host_batch, weight)
      accumulator.add(out, weight)
    return accumulator.result()
