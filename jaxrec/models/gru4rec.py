"""GRU4Rec (Hidasi et al. 2016): a GRU over the item sequence, scored against item embeddings."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.models.layers import Dense, embed_init


class GRU4Rec(nnx.Module):
  def __init__(self, num_items: int, max_len: int, dim: int = 64, hidden: int = 128,
               num_layers: int = 1, dropout: float = 0.2, *, rngs: nnx.Rngs):
    del max_len  # recurrent: any length
    self.num_items = num_items
    self.item_embedding = nnx.Embed(num_items, dim, embedding_init=embed_init("vocab", "embed"),
                                    rngs=rngs)
    self.cells = nnx.List([nnx.GRUCell(dim if i == 0 else hidden, hidden, rngs=rngs)
                           for i in range(num_layers)])
    self.project = Dense(hidden, dim, ("mlp", "embed"), rngs=rngs)
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, inputs: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
    valid = inputs > 0
    x = self.dropout(self.item_embedding(inputs), deterministic=rngs is None, rngs=rngs)
    for cell in self.cells:
      carry = jnp.zeros((inputs.shape[0], cell.hidden_features), x.dtype)

      def step(carry, xs, cell=cell):
        x_t, valid_t = xs
        new, out = cell(carry, x_t)
        # Left padding: hold the state (and emit zeros) until the history starts.
        new = jnp.where(valid_t[:, None], new, carry)
        return new, jnp.where(valid_t[:, None], out, 0)

      _, x = jax.lax.scan(step, carry, (x.swapaxes(0, 1), valid.swapaxes(0, 1)))
      x = x.swapaxes(0, 1)
    return self.project(self.dropout(x, deterministic=rngs is None, rngs=rngs))

  def query(self, inputs: jax.Array) -> jax.Array:
    return self(inputs)[:, -1]

  def item_vectors(self) -> jax.Array:
    return self.item_embedding.embedding[...]
