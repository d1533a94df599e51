"""BERT4Rec (Sun et al. 2019): a bidirectional transformer trained to fill in masked items.

The mask token is item id `num_items` (one past the catalogue); to predict the next item, the
history is shifted left and the mask token appended, and the model fills it in.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.models.layers import TransformerEncoder


class BERT4Rec(nnx.Module):
  def __init__(self, num_items: int, max_len: int, dim: int = 64, num_layers: int = 2,
               num_heads: int = 2, mlp_dim: int = 256, dropout: float = 0.2, *, rngs: nnx.Rngs):
    self.num_items = num_items
    self.encoder = TransformerEncoder(num_items + 1, max_len, dim, num_layers, num_heads, mlp_dim,
                                      dropout, causal=False, rngs=rngs)

  @property
  def mask_id(self) -> int:
    return self.num_items

  def __call__(self, inputs: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
    return self.encoder(inputs, rngs)

  def query(self, inputs: jax.Array) -> jax.Array:
    masked = jnp.concatenate(
        [inputs[:, 1:], jnp.full((inputs.shape[0], 1), self.mask_id, inputs.dtype)], axis=1)
    return self(masked)[:, -1]

  def item_vectors(self) -> jax.Array:
    return self.encoder.item_vectors()[:self.num_items]
