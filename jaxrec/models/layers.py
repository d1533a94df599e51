"""Building blocks shared by the sequential models: sharded initialisers and a transformer block."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

NEG_INF = -1e9  # finite: a fully masked (padding) query row stays NaN-free


def embed_init(*axes: str):
  return nnx.with_partitioning(nnx.initializers.truncated_normal(0.02), axes)


def dense_init(*axes: str):
  return nnx.with_partitioning(nnx.initializers.xavier_uniform(), axes)


def mean_pool(embeddings: jax.Array, ids: jax.Array) -> jax.Array:
  """Mean of the embeddings of non-padding ids along the second-to-last axis."""
  mask = (ids > 0)[..., None].astype(embeddings.dtype)
  return (embeddings * mask).sum(-2) / jnp.maximum(mask.sum(-2), 1.0)


def title_bucket(ids, title_buckets: int):
  """The bucket of each title-word vocabulary id (0 = padding stays 0), for jax or numpy arrays:
  the warm start moves rows by it when a later snapshot renumbers the words."""
  return (ids % (title_buckets - 1) + 1) * (ids > 0)


def metadata_sum(tables, features: dict[str, jax.Array], title_buckets: int) -> jax.Array:
  """Sum of an item's metadata embeddings, one table per feature in `tables`; multi-valued
  features (genres, title words) mean-pooled. Title words are hashed into `title_buckets`, so the
  words of a new title still land in a trained bucket."""
  out = 0.0
  for name, table in tables.items():
    ids = features[name]
    if name == "title_words":
      ids = title_bucket(ids, title_buckets)
    out = out + (mean_pool(table(ids), ids) if ids.ndim == 2 else table(ids))
  return out


class Dense(nnx.Linear):
  def __init__(self, din: int, dout: int, axes: tuple[str, str], *, rngs: nnx.Rngs):
    super().__init__(din, dout, kernel_init=dense_init(*axes), rngs=rngs)


class TransformerBlock(nnx.Module):
  """Pre-LayerNorm self-attention + feed-forward block with residual dropout."""

  def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float, *, rngs: nnx.Rngs):
    if dim % num_heads:
      raise ValueError(f"model dim {dim} is not divisible by num_heads {num_heads}")
    self.num_heads = num_heads
    self.norm1 = nnx.LayerNorm(dim, rngs=rngs)
    self.qkv = Dense(dim, 3 * dim, ("embed", "heads"), rngs=rngs)
    self.out = Dense(dim, dim, ("heads", "embed"), rngs=rngs)
    self.norm2 = nnx.LayerNorm(dim, rngs=rngs)
    self.mlp_in = Dense(dim, mlp_dim, ("embed", "mlp"), rngs=rngs)
    self.mlp_out = Dense(mlp_dim, dim, ("mlp", "embed"), rngs=rngs)
    self.dropout = nnx.Dropout(dropout)

  def attend(self, q: jax.Array, k: jax.Array, v: jax.Array, mask: jax.Array,
             rngs: nnx.Rngs | None) -> jax.Array:
    """q, k, v [B, L, H, Dh]; mask [B, L, L] (True where a query may attend to a key)."""
    logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / jnp.sqrt(q.shape[-1])
    logits = jnp.where(mask[:, None], logits, NEG_INF)
    weights = self.dropout(jax.nn.softmax(logits, axis=-1), deterministic=rngs is None, rngs=rngs)
    return jnp.einsum("bhqk,bkhd->bqhd", weights, v)

  def __call__(self, x: jax.Array, mask: jax.Array, rngs: nnx.Rngs | None) -> jax.Array:
    """x [B, L, D]; `mask` as `attend` takes it."""
    deterministic = rngs is None
    b, length, d = x.shape
    heads = lambda t: t.reshape(b, length, self.num_heads, d // self.num_heads)
    q, k, v = (heads(t) for t in jnp.split(self.qkv(self.norm1(x)), 3, axis=-1))
    attended = self.attend(q, k, v, mask, rngs).reshape(b, length, d)
    x = x + self.dropout(self.out(attended), deterministic=deterministic, rngs=rngs)
    h = self.mlp_out(self.dropout(jax.nn.gelu(self.mlp_in(self.norm2(x))),
                                  deterministic=deterministic, rngs=rngs))
    return x + self.dropout(h, deterministic=deterministic, rngs=rngs)


class TransformerEncoder(nnx.Module):
  """Item + learned position embeddings -> N blocks -> LayerNorm. Causal or bidirectional."""

  def __init__(self, num_embeddings: int, max_len: int, dim: int, num_layers: int,
               num_heads: int, mlp_dim: int, dropout: float, causal: bool, *, rngs: nnx.Rngs):
    self.item_embedding = nnx.Embed(num_embeddings, dim, embedding_init=embed_init("vocab", "embed"),
                                    rngs=rngs)
    self.position_embedding = nnx.Embed(max_len, dim, embedding_init=embed_init(None, "embed"),
                                        rngs=rngs)
    self.blocks = nnx.List([TransformerBlock(dim, num_heads, mlp_dim, dropout, rngs=rngs)
                            for _ in range(num_layers)])
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)
    self.causal = causal
    self.dim = dim

  def __call__(self, inputs: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
    """inputs [B, L] item ids (0 = padding) -> hidden states [B, L, D]."""
    valid = inputs > 0
    length = inputs.shape[1]
    x = self.item_embedding(inputs) * jnp.sqrt(self.dim)
    x = x + self.position_embedding(jnp.arange(length))[None]
    x = self.dropout(x, deterministic=rngs is None, rngs=rngs) * valid[..., None]
    mask = valid[:, None, :]
    if self.causal:
      mask = mask & jnp.tril(jnp.ones((length, length), bool))[None]
    for block in self.blocks:
      x = block(x, mask, rngs) * valid[..., None]
    return self.norm(x)

  def item_vectors(self) -> jax.Array:
    """The output item embeddings, shared with the input ones: [V, D]."""
    return self.item_embedding.embedding[...]
