"""Streaming item-frequency estimation for sampling-bias correction (Yi et al. 2019,
"Sampling-bias-corrected neural modeling for large corpus item recommendations", algorithm 2).

In-batch negatives are the other rows' positives, so an item is drawn as a negative as often as it
appears in batches. The estimator keeps, per item, the step it was last seen and a moving average
of the number of steps per occurrence (the steps since the last sighting over the occurrences in
this batch, so an item in several rows of one batch counts several times); one over it is the
item's expected occurrences per batch, which the logits are corrected by. It follows the training
stream as it is, without a pass over the data first, and tracks popularity that changes over time.

The statistics are nnx variables of their own type, not Params: the forward pass updates them and
the optimizer leaves them alone (see train/step.py); they are checkpointed with the model.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class StreamingStatistic(nnx.Variable):
  """A model variable updated by the forward pass in training, not by gradients."""


class StreamingFrequency(nnx.Module):
  def __init__(self, num_items: int, alpha: float = 0.05):
    if not 0 < alpha <= 1:
      raise ValueError(f"alpha must be in (0, 1], got {alpha}")
    self.alpha = alpha
    self.step = StreamingStatistic(jnp.zeros((), jnp.float32))
    self.last_seen = StreamingStatistic(jnp.zeros((num_items,), jnp.float32))  # 0 = never
    self.gap = StreamingStatistic(jnp.ones((num_items,), jnp.float32))

  def update(self, items: jax.Array) -> jax.Array:
    """Records one training batch's `items` (any shape, repeats allowed) and returns the log of
    their expected occurrences per batch, from the estimate that includes this batch."""
    items = items.reshape(-1)
    step = self.step[...] + 1
    count = jnp.zeros_like(self.gap[...]).at[items].add(1.0)[items]
    last = self.last_seen[...][items]
    # A first sighting at step t is the only evidence so far: `count` times in t steps.
    observed = (step - last) / count
    gap = jnp.where(last > 0, (1 - self.alpha) * self.gap[...][items] + self.alpha * observed,
                    observed)
    # Repeats of an item in the batch compute the same values, so the scatter is unambiguous.
    self.gap[...] = self.gap[...].at[items].set(gap)
    self.last_seen[...] = self.last_seen[...].at[items].set(step)
    self.step[...] = step
    return -jnp.log(gap)

  def log_frequency(self, items: jax.Array) -> jax.Array:
    """The current estimate for `items`, without recording them."""
    return -jnp.log(self.gap[...][items])
