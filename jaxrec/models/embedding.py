"""Embedding tables sharded row-wise over a mesh axis, with lookups that never gather a table.

A table's rows are split over the mesh axis its "vocab" logical axis maps to (normally "model"):
with 8 devices on that axis each holds 1/8 of the rows. A lookup runs per device under
`shard_map`: each device gathers the requested rows it owns (zeros for the others) and a `psum`
over the row axis assembles the result, so only the [batch, dim] rows cross devices, never the
table. Without a mesh, or when the axis does not divide the rows, it is a plain gather.

A table updated sparsely (the default) is an `EmbeddingTable` variable, not an `nnx.Param`: optax
never sees it. The train step gathers its rows, differentiates with respect to those rows and
applies a `RowOptimizer` to the touched rows only (models/row_optimizers.py); the optimizer's
accumulator lives beside the table (`RowOptimizerState`), sharded like its rows, so it is
checkpointed and restored onto another mesh with the model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx
from jax.sharding import PartitionSpec as P

from jaxrec.parallel.partitioner import axis_size, batch_spec, mesh_axis
from jaxrec.models.row_optimizers import RowOptimizer, update_sharded

# Rows are padded to a multiple of this, so any row axis of a power-of-two size up to 128 divides
# them and a checkpoint's shapes do not depend on the mesh it was written on.
ROW_MULTIPLE = 128


class EmbeddingTable(nnx.Variable):
  """Embedding rows updated by a row optimizer (only the rows a batch touched), not by optax."""


class RowOptimizerState(nnx.Variable):
  """A row optimizer's accumulator, sharded like its table's rows."""


def padded_rows(num_rows: int) -> int:
  return -(-num_rows // ROW_MULTIPLE) * ROW_MULTIPLE


class ShardedEmbedding(nnx.Module):
  def __init__(self, num_rows: int, dim: int, *, rngs: nnx.Rngs,
               row_optimizer: RowOptimizer | None = None, init_scale: float = 0.05):
    """`row_optimizer` None makes the table an ordinary `nnx.Param` (dense optax updates)."""
    self.num_rows = num_rows
    shape = (padded_rows(num_rows), dim)
    value = nnx.initializers.normal(init_scale)(rngs.params(), shape, jnp.float32)
    kind = nnx.Param if row_optimizer is None else EmbeddingTable
    self.table = kind(value, out_sharding=("vocab", "embed"))
    accumulator = row_optimizer.init(value) if row_optimizer is not None else None
    self.accumulator = (None if accumulator is None else RowOptimizerState(
        accumulator, out_sharding=("vocab", "embed")[:accumulator.ndim]))

  @property
  def row_axis(self) -> str | None:
    """The mesh axis the rows are split over: where the partitioner's rules put "vocab"."""
    return mesh_axis("vocab")

  def __call__(self, ids: jax.Array) -> jax.Array:
    """ids [B, ...] -> rows [B, ..., D]; ids must be in [0, num_rows)."""
    table = self.table[...]
    shards = axis_size(self.row_axis, table.shape[0])
    if shards == 1:
      return table[ids]
    spec = batch_spec(ids)

    def local(table, ids):
      start = jax.lax.axis_index(self.row_axis) * table.shape[0]
      local_ids = ids - start
      owned = (local_ids >= 0) & (local_ids < table.shape[0])
      rows = table[jnp.where(owned, local_ids, 0)] * owned[..., None].astype(table.dtype)
      return jax.lax.psum(rows, self.row_axis)

    return jax.shard_map(local, in_specs=(P(self.row_axis, None), spec), out_specs=spec)(
        table, ids)

  def apply_gradients(self, optimizer: RowOptimizer, ids: jax.Array, row_grads: jax.Array):
    """Updates, in place, the rows `ids` touched from their gradients `row_grads` [..., D]."""
    accumulator = None if self.accumulator is None else self.accumulator[...]
    self.table[...], accumulator = update_sharded(optimizer, self.table[...], accumulator, ids,
                                                  row_grads, self.row_axis)
    if accumulator is not None:
      self.accumulator[...] = accumulator


def pool(rows: jax.Array, ids: jax.Array, weights: jax.Array | None = None,
         mode: str = "sum") -> jax.Array:
  """Multi-hot rows [B, H, D] -> [B, D]: sum or mean over the non-padding ids (id 0), each
  scaled by its weight when given."""
  w = (ids > 0).astype(rows.dtype)
  if weights is not None:
    w = w * weights.astype(rows.dtype)
  pooled = jnp.einsum("bhd,bh->bd", rows, w)
  if mode == "mean":
    pooled = pooled / jnp.maximum(jnp.sum(ids > 0, -1, keepdims=True), 1).astype(rows.dtype)
  elif mode != "sum":
    raise ValueError(f"unknown pooling {mode!r}: use 'sum' or 'mean'")
  return pooled
