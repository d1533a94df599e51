"""Row-wise sparse updates of embedding tables: a step reads and writes only the rows its batch
touched, so its cost follows the batch, not the table. Works on any backend: it is a gather, a
segment sum and a scatter.

The batch's ids are deduplicated (to a fixed size, so the step compiles once), the gradients of
their rows summed per id, and each touched row updated by SGD, Adagrad (one accumulator per
element, as optax.adagrad) or row-wise Adagrad (one accumulator per row: 1/D of the memory).
Untouched rows keep their values and their accumulators, exactly as a dense Adagrad step with a
zero gradient would leave them.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec as P

from jaxrec.parallel.partitioner import BATCH_AXIS, axis_size, batch_spec

KINDS = ("sgd", "adagrad", "rowwise_adagrad")


@dataclasses.dataclass(frozen=True)
class RowOptimizer:
  kind: str = "rowwise_adagrad"
  learning_rate: float = 0.01
  initial_accumulator: float = 0.1  # optax.adagrad's default
  eps: float = 1e-7

  def __post_init__(self):
    if self.kind not in KINDS:
      raise ValueError(f"unknown row optimizer {self.kind!r}: use one of {', '.join(KINDS)}")

  def init(self, table: jax.Array) -> jax.Array | None:
    """The accumulator for `table` [N, D]: [N, D] (adagrad), [N] (row-wise) or None (sgd)."""
    if self.kind == "sgd":
      return None
    shape = table.shape if self.kind == "adagrad" else table.shape[:1]
    return jnp.full(shape, self.initial_accumulator, jnp.float32)

  def update(self, table: jax.Array, accumulator, ids: jax.Array, row_grads: jax.Array):
    """Applies the gradients `row_grads` [..., D] of the rows `ids` [...] (repeats allowed) and
    returns (table, accumulator). Donate both to update them in place."""
    ids = ids.reshape(-1)
    row_grads = row_grads.reshape(len(ids), -1)
    # Fixed-size dedup: absent slots get id N (out of range), which gathers fill and scatters drop.
    unique, inverse = jnp.unique(ids, size=len(ids), fill_value=table.shape[0],
                                 return_inverse=True)
    grads = jax.ops.segment_sum(row_grads, inverse.reshape(-1), num_segments=len(ids))
    if self.kind == "sgd":
      step = grads
    else:
      squares = grads * grads if self.kind == "adagrad" else jnp.mean(grads * grads, -1)
      summed = accumulator.at[unique].get(mode="fill", fill_value=0) + squares
      accumulator = accumulator.at[unique].set(summed, mode="drop")
      scale = jnp.where(summed > 0, jax.lax.rsqrt(summed + self.eps), 0.0)
      step = grads * (scale if self.kind == "adagrad" else scale[:, None])
    table = table.at[unique].add((-self.learning_rate * step).astype(table.dtype), mode="drop")
    return table, accumulator


def update_sharded(optimizer: RowOptimizer, table: jax.Array, accumulator, ids: jax.Array,
                   row_grads: jax.Array, row_axis: str | None):
  """`optimizer.update` on a table whose rows are split over the mesh's `row_axis`: every device
  sees the whole batch's ids and row gradients (gathered over the data axis, [batch, dim] each)
  and updates the rows it owns, so no table row crosses devices. Elsewhere a plain update."""
  if axis_size(row_axis, table.shape[0]) == 1:
    return optimizer.update(table, accumulator, ids, row_grads)
  spec = batch_spec(ids)
  gather = (lambda x: jax.lax.all_gather(x, BATCH_AXIS, tiled=True)) if spec else (lambda x: x)
  rows_spec = P(row_axis, None)
  accumulator_spec = None if accumulator is None else P(row_axis, *[None] * (accumulator.ndim - 1))

  def local(table, accumulator, ids, row_grads):
    ids, row_grads = gather(ids), gather(row_grads)
    local_ids = ids - jax.lax.axis_index(row_axis) * table.shape[0]
    owned = (local_ids >= 0) & (local_ids < table.shape[0])
    # Rows another device owns become id N here: out of range, so the update drops them.
    return optimizer.update(table, accumulator, jnp.where(owned, local_ids, table.shape[0]),
                            row_grads)

  # Every device along the data axis gathers the same batch and so computes the same rows: the
  # outputs are replicated over it, which shard_map cannot infer through the gather.
  return jax.shard_map(local, in_specs=(rows_spec, accumulator_spec, spec, spec),
                       out_specs=(rows_spec, accumulator_spec), check_vma=False)(
                           table, accumulator, ids, row_grads)
