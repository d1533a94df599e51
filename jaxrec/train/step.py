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
  skips the update (keeps state and optimizer state) when the loss or any gradient is not finite."""
  base_key = jax.random.key(seed)

  def train_step(state, opt_state, batch, step):
    key = jax.random.fold_in(base_key, step)

    def loss_of(state):
      return loss_fn(nnx.merge(graphdef, state), batch, key)

    loss, grads = jax.value_and_grad(loss_of)(state)
    grad_norm = optax.tree.norm(grads)
    finite = jnp.isfinite(loss) & jnp.isfinite(grad_norm)
    updates, new_opt_state = tx.update(grads, opt_state, state)
    new_state = optax.apply_updates(state, updates)
    keep = lambda new, old: jax.tree.map(lambda n, o: jnp.where(finite, n, o), new, old)
    return (keep(new_state, state), keep(new_opt_state, opt_state),
            {"loss": loss, "grad_norm": grad_norm, "finite": finite})

  return train_step


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
