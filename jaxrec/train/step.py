"""The pure train step over nnx.split state, and the guard that stops runs gone non-finite."""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxrec.errors import UserError


def make_train_step(graphdef, tx: optax.GradientTransformation, loss_fn: Callable, seed: int):
  """loss_fn(model, batch, key) -> scalar loss. The returned step(state, opt_state, batch, step)
  skips the update (keeps state and optimizer state) when the loss or any gradient is not finite.

  Only `nnx.Param`s are differentiated and optimized (`opt_state` is over them); any other
  variable (a streaming statistic such as the two-tower's item-frequency estimate) takes the
  value the loss's forward pass left in it.
  """
  base_key = jax.random.key(seed)

  def train_step(state, opt_state, batch, step):
    key = jax.random.fold_in(base_key, step)
    params, rest = nnx.split_state(state, nnx.Param, ...)

    def loss_of(params):
      # Fresh Variable objects for this trace: the forward pass may assign to them.
      model = nnx.merge(graphdef, params, jax.tree.map(lambda x: x, rest))
      return loss_fn(model, batch, key), nnx.state(model, nnx.Not(nnx.Param))

    (loss, new_rest), grads = jax.value_and_grad(loss_of, has_aux=True)(params)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = tx.update(grads, opt_state, params)
    new_state = nnx.merge_state(optax.apply_updates(params, updates), new_rest)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    return (keep(new_state, state), keep(new_opt_state, opt_state),
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
