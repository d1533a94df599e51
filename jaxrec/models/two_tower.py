"""Two-tower retrieval: a user (query) tower and an item tower meeting in one embedding space.

User tower: user id and side features, the recent history pooled with exponential time decay (the
short-term interest: with a one-hour half-life, an item seen seconds ago weighs far more than one
seen yesterday), the uniformly pooled history (the long-term interest) and the request context
(device, hour); or, instead of the two pools, a SASRec transformer over the history. Item tower:
item id plus metadata (genres, year, title words hashed into buckets), so an item never seen in
training still gets an embedding from its metadata alone; id dropout in training teaches the tower
to rely on it. Both outputs are L2-normalised.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.data.tokenize import NUM_HOURS
from jaxrec.data.vocab import OOV
from jaxrec.models.frequency import StreamingFrequency
from jaxrec.models.layers import Dense, TransformerEncoder, embed_init, metadata_sum


class MLP(nnx.Module):
  def __init__(self, din: int, hidden: int, dout: int, *, rngs: nnx.Rngs):
    self.hidden = Dense(din, hidden, ("embed", "mlp"), rngs=rngs)
    self.out = Dense(hidden, dout, ("mlp", "embed"), rngs=rngs)

  def __call__(self, x):
    return self.out(jax.nn.relu(self.hidden(x)))


def l2_normalize(x: jax.Array) -> jax.Array:
  return x * jax.lax.rsqrt(jnp.maximum((x * x).sum(-1, keepdims=True), 1e-12))


class ItemTower(nnx.Module):
  def __init__(self, num_items: int, feature_sizes: dict[str, int], dim: int, hidden: int,
               title_buckets: int, *, rngs: nnx.Rngs):
    self.id_embedding = nnx.Embed(num_items, dim, embedding_init=embed_init("vocab", "embed"),
                                  rngs=rngs)
    self.title_buckets = title_buckets
    sizes = {**feature_sizes, "title_words": title_buckets} if "title_words" in feature_sizes \
        else feature_sizes
    self.features = nnx.Dict({name: nnx.Embed(size, dim, embedding_init=embed_init("vocab", "embed"),
                                              rngs=rngs) for name, size in sizes.items()})
    self.mlp = MLP(2 * dim, hidden, dim, rngs=rngs)

  def metadata(self, features: dict[str, jax.Array]) -> jax.Array:
    """Sum of the metadata embeddings; multi-valued features (genres, title words) mean-pooled."""
    return metadata_sum(self.features, features, self.title_buckets)

  def __call__(self, items: jax.Array, features: dict[str, jax.Array],
               keep_id: jax.Array | None = None) -> jax.Array:
    """items [N] ids with their `features` rows; where `keep_id` [N] is 0 the item's id is
    replaced by the out-of-vocabulary id (id dropout in training; metadata-only vectors for
    cold items). A learned stand-in rather than a zero vector: whatever all ids share (a common
    direction the queries align with) it learns too, so a new item is not ranked below every
    known one for lacking it."""
    if keep_id is not None:
      items = jnp.where(keep_id > 0, items, OOV)
    ids = self.id_embedding(items)
    return l2_normalize(self.mlp(jnp.concatenate([ids, self.metadata(features)], -1)))


class UserTower(nnx.Module):
  """The query tower. Its history encoder is "pooling" (time-decayed short-term plus uniform
  long-term mean, both [Q, D]) or "sasrec" (a causal transformer over the history, the SASRec
  query encoder: one pass gives the state after every position of a sequence)."""

  def __init__(self, num_users: int, num_items: int, user_feature_sizes: dict[str, int],
               num_devices: int, dim: int, hidden: int, encoder: str = "pooling",
               max_len: int = 100, num_layers: int = 2, num_heads: int = 2, dropout: float = 0.2,
               *, rngs: nnx.Rngs):
    if encoder not in ("pooling", "sasrec"):
      raise ValueError(f"unknown query encoder {encoder!r}: use 'pooling' or 'sasrec'")
    self.encoder = encoder
    self.id_embedding = nnx.Embed(num_users, dim, embedding_init=embed_init("vocab", "embed"),
                                  rngs=rngs)
    if encoder == "sasrec":
      self.sequence = TransformerEncoder(num_items, max_len, dim, num_layers, num_heads, 4 * dim,
                                         dropout, causal=True, rngs=rngs)
    else:
      self.history_embedding = nnx.Embed(num_items, dim,
                                         embedding_init=embed_init("vocab", "embed"), rngs=rngs)
    self.features = nnx.Dict({name: nnx.Embed(size, dim, embedding_init=embed_init("vocab", "embed"),
                                              rngs=rngs)
                              for name, size in user_feature_sizes.items()})
    self.device = nnx.Embed(num_devices, dim, embedding_init=embed_init("vocab", "embed"), rngs=rngs)
    self.hour = nnx.Embed(NUM_HOURS, dim, embedding_init=embed_init("vocab", "embed"), rngs=rngs)
    history_dim = dim if encoder == "sasrec" else 2 * dim
    self.mlp = MLP(2 * dim + history_dim, hidden, dim, rngs=rngs)

  def pooled_history(self, history: jax.Array, ages: jax.Array, half_life: float) -> jax.Array:
    """history [Q, L] item ids (0 = padding); ages [Q, L] seconds between each history item and
    the request -> [Q, 2D]: the time-decayed (short-term) and uniform (long-term) means."""
    items = self.history_embedding(history)
    valid = (history > 0).astype(items.dtype)
    decay = jnp.exp2(-jnp.maximum(ages, 0) / half_life) * valid
    short = (items * decay[..., None]).sum(1) / jnp.maximum(decay.sum(1, keepdims=True), 1e-9)
    long = (items * valid[..., None]).sum(1) / jnp.maximum(valid.sum(1, keepdims=True), 1.0)
    return jnp.concatenate([short, long], -1)

  def sequence_states(self, inputs: jax.Array, rngs: nnx.Rngs | None = None) -> jax.Array:
    """inputs [B, L] left-padded histories -> [B, L, D]: position t summarises items up to t."""
    return self.sequence(inputs, rngs)

  def __call__(self, user: jax.Array, user_features: dict[str, jax.Array],
               history_summary: jax.Array, device: jax.Array, hour: jax.Array) -> jax.Array:
    """user [Q]; history_summary [Q, ...] from pooled_history or sequence_states; device, hour
    [Q]: the request context."""
    profile = self.id_embedding(user)
    for name, table in self.features.items():
      profile = profile + table(user_features[name])
    context = self.device(device) + self.hour(hour)
    return l2_normalize(self.mlp(jnp.concatenate([profile, history_summary, context], -1)))


class TwoTower(nnx.Module):
  def __init__(self, num_users: int, num_items: int, item_feature_sizes: dict[str, int],
               user_feature_sizes: dict[str, int], num_devices: int, dim: int = 64,
               hidden: int = 256, title_buckets: int = 4096, frequency_alpha: float = 0.05,
               query_encoder: str = "pooling", max_len: int = 100, num_layers: int = 2,
               num_heads: int = 2, dropout: float = 0.2, *, rngs: nnx.Rngs):
    self.user_tower = UserTower(num_users, num_items, user_feature_sizes, num_devices, dim, hidden,
                                query_encoder, max_len, num_layers, num_heads, dropout, rngs=rngs)
    self.item_tower = ItemTower(num_items, item_feature_sizes, dim, hidden, title_buckets,
                                rngs=rngs)
    self.frequency = StreamingFrequency(num_items, frequency_alpha)
