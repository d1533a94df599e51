"""SASRec (Kang & McAuley 2018): causal self-attention over a user's history.

Trained per user with a loss at every position (the original recipe), not one copy of the
sequence per prefix; input and output item embeddings are shared.
"""

from __future__ import annotations

import jax
from flax import nnx

from jaxrec.models.layers import TransformerEncoder


class SASRec(nnx.Module):
  def __init__(self, num_items: int, max_len: int, dim: int = 64, num_layers: int = 2,
               num_heads: int = 2, mlp_dim: int = 256, dropout: float = 0.2, *, rngs: nnx.Rngs):
    self.num_items = num_items
    self.encoder = TransformerEncoder(num_items, max_len, dim, num_layers, num_heads, mlp_dim,
                                      dropout, causal=True, rngs=rngs)

  def __call__(self, inputs: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
    """Hidden state at every position [B, L, D]; position t predicts the item after it."""
    return self.encoder(inputs, rngs)

  def query(self, inputs: jax.Array) -> jax.Array:
    """The user's query vector for the next item: the last position's state [B, D]."""
    return self(inputs)[:, -1]

  def item_vectors(self) -> jax.Array:
    return self.encoder.item_vectors()[:self.num_items]
