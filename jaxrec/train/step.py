"""The pure train step over nnx.split state, and the guard that stops runs gone non-finite."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxrec.errors import UserError
from jaxrec.models.embedding import EmbeddingTable, RowOptimizerState
from jaxrec.models.row_optimizers import RowOptimizer


# Sparsely updated tables and their accumulators: never differentiated, never seen by optax.
SPARSE = nnx.Any(EmbeddingTable, RowOptimizerState)


def make_train_step(graphdef, tx: optax.GradientTransformation, loss_fn: Callable, seed: int,
                    row_optimizer: RowOptimizer | None = None):
  """loss_fn(model, batch, key) -> scalar loss. The returned step(state, opt_state, batch, step)
  skips the update (keeps state and optimizer state) when the loss or any gradient is not finite.

  Only `nnx.Param`s are differentiated and optimized (`opt_state` is over them); any other
  variable (a streaming statistic such as the two-tower's item-frequency estimate) takes the
  value the loss's forward pass left in it.

  A model with sparsely updated tables (`model.tables`, `model.embedding_ids(batch)`; see
  models/embedding.py) has their rows gathered here and passed as loss_fn(model, batch, key, rows):
  the gradient is taken with respect to those rows, never the whole table, and `row_optimizer`
  updates only the touched rows.
  """
  base_key = jax.random.key(seed)

  def train_step(state, opt_state, batch, step):
    key = jax.random.fold_in(base_key, step)
    params, tables, rest = nnx.split_state(state, nnx.Param, SPARSE, ...)
    model = nnx.merge(graphdef, state)
    ids = model.embedding_ids(batch) if row_optimizer is not None else {}
    rows = {name: model.tables[name](ids[name]) for name in ids}

    def loss_of(params, rows):
      # Fresh Variable objects for this trace: the forward pass may assign to them.
      model = nnx.merge(graphdef, params, tables, jax.tree.map(lambda x: x, rest))
      loss = loss_fn(model, batch, key, rows) if ids else loss_fn(model, batch, key)
      return loss, nnx.state(model, nnx.Not(nnx.Any(nnx.Param, SPARSE)))

    (loss, new_rest), (grads, row_grads) = jax.value_and_grad(
        loss_of, argnums=(0, 1), has_aux=True)(params, rows)
    grad_norm = optax.tree.norm((grads, row_grads))
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    new_params = keep(optax.apply_updates(params, updates), params)
    model = nnx.merge(graphdef, new_params, tables, keep(new_rest, rest))
    for name, table_ids in ids.items():
      # A skipped step updates with zero gradients (a no-op for every row optimizer) rather
      # than selecting between two whole tables, which would cost what the table holds.
      model.tables[name].apply_gradients(row_optimizer, table_ids,
                                         jnp.where(finite, row_grads[name], 0))
    return (nnx.state(model), keep(new_opt_state, opt_state),
            {"loss": loss, "grad_norm": grad_norm, "finite": finite})

  return train_step


def trainable(state):
  """The `nnx.Param` part of a state (or of its shardings): what the optimizer updates."""
  return nnx.split_state(state, nnx.Param, ...)[0]


class NonFiniteGuard:
  """Counts skipped steps; after `max_in_a_row` consecutive ones the run stops with a message."""

  def __init__(self, max_in_a_row: int, skipped: int = 0):
    self.max_in_a_row = max_in_a_row
    self.skipped = skipped
    self.in_a_row = 0

  def update(self, finite: bool, step: int) -> None:
    if finite:
      self.in_a_row = 0
      return
    self.skipped += 1
    self.in_a_row += 1
    if self.in_a_row >= self.max_in_a_row:
      raise UserError(
          f"stopped at step {step}: {self.in_a_row} steps in a row had a non-finite loss or "
          f"gradient ({self.skipped} skipped in all). Lower optimizer.learning_rate, set "
          "optimizer.clip_norm, or check the data; the last good checkpoint is kept.")
