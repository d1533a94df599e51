"""The recommendation foundation model: a causal event transformer over rich tokens.

One model learns a user's preferences from the whole interaction history and is reused by
retrieval (its last state is the query, its item encoder the item side), ranking and fine-tuning.

- Input: one embedding per merged event token (models/event_tokens.py: item, action, engagement,
  context, time gap), plus position.
- Blocks: pre-LayerNorm transformer blocks over `causal_attention` (models/local_attention.py):
  full causal attention for short contexts, or a sliding window plus `num_global` learned
  attention-sink tokens placed before the history (StreamingLLM: being first, they see no
  history and summarise nothing; they give each query's attention somewhere to rest), computed in
  chunks, for histories of thousands of tokens.
- Items: an item's vector is its id embedding plus its metadata embedding (genres, year, hashed
  title words), shared by the input and the output layer. Id dropout in training replaces ids by
  the learned out-of-vocabulary row, so the metadata part learns to carry the item; an item never
  seen in training gets that row plus its metadata: its metadata alone, nothing item-specific,
  in training too, where it passes no gradient (see FoundationTask.id_masks).
- History summary (optional): the mean vector of the items the user watched before the window,
  projected and added to every token, so a window of recent tokens still knows the long-run
  taste (which interests a returning user may pick up).
- Heads: the next token's item from the state itself; the item h tokens ahead through a projection
  per extra step (multi-token prediction); the next token's genres and event type.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.data.events import NUM_EVENT_TYPES
from jaxrec.data.vocab import OOV
from jaxrec.models.event_tokens import EventTokenEmbedding
from jaxrec.models.layers import Dense, TransformerBlock, embed_init, metadata_sum
from jaxrec.models.local_attention import causal_attention


class ItemEncoder(nnx.Module):
  """item id + metadata -> [D]. Multi-valued metadata (genres, title words) is mean-pooled."""

  def __init__(self, num_items: int, metadata_sizes: dict[str, int], dim: int,
               title_buckets: int, *, rngs: nnx.Rngs):
    self.title_buckets = title_buckets
    sizes = dict(metadata_sizes)
    if "title_words" in sizes:
      sizes["title_words"] = title_buckets
    self.id_embedding = nnx.Embed(num_items, dim, embedding_init=embed_init("vocab", "embed"),
                                  rngs=rngs)
    self.metadata_tables = nnx.Dict({
        name: nnx.Embed(size, dim, embedding_init=embed_init("vocab", "embed"), rngs=rngs)
        for name, size in sizes.items()})

  def metadata(self, features: dict[str, jax.Array]) -> jax.Array:
    return metadata_sum(self.metadata_tables, features, self.title_buckets)

  def __call__(self, items: jax.Array, features: dict[str, jax.Array],
               keep_id: jax.Array | None = None, learn: jax.Array | None = None) -> jax.Array:
    """items [N] with their metadata rows; where keep_id [N] is False the id becomes OOV; where
    learn [N] is False the vector is a constant of the step (no gradient reaches its rows)."""
    if keep_id is not None:
      items = jnp.where(keep_id, items, OOV)
    vectors = self.id_embedding(items) + self.metadata(features)
    if learn is not None:
      vectors = jnp.where(learn[:, None], vectors, jax.lax.stop_gradient(vectors))
    return vectors


class FoundationBlock(TransformerBlock):
  """The transformer block with attention through `causal_attention`: full, or a sliding window
  plus attention sinks in linear memory. Its `mask` is the validity of each position [B, L]."""

  def __init__(self, dim: int, num_heads: int, mlp_dim: int, dropout: float,
               window: int | None, num_global: int, chunk: int, *, rngs: nnx.Rngs):
    super().__init__(dim, num_heads, mlp_dim, dropout, rngs=rngs)
    self.window, self.num_global, self.chunk = window, num_global, chunk

  def attend(self, q, k, v, mask, rngs):
    return causal_attention(q, k, v, mask, window=self.window, num_global=self.num_global,
                            chunk=self.chunk)


class FoundationModel(nnx.Module):
  def __init__(self, num_items: int, metadata_sizes: dict[str, int],
               token_field_sizes: dict[str, int], num_genres: int, max_len: int, dim: int = 64,
               num_layers: int = 2, num_heads: int = 2, mlp_dim: int = 256,
               dropout: float = 0.2, combine: str = "sum", window: int | None = None,
               num_global: int = 0, chunk: int = 128, horizon: int = 1,
               title_buckets: int = 4096, history_summary: bool = False, *, rngs: nnx.Rngs):
    if horizon < 1:
      raise ValueError(f"horizon must be >= 1 (1 = next token only), got {horizon}")
    self.num_items, self.num_global = num_items, num_global
    self.items = ItemEncoder(num_items, metadata_sizes, dim, title_buckets, rngs=rngs)
    self.tokens = EventTokenEmbedding(token_field_sizes, dim, max_len, combine, rngs=rngs)
    if history_summary:
      self.summary = Dense(dim, dim, ("embed", "mlp"), rngs=rngs)
    if num_global:
      self.global_tokens = nnx.Param(
          nnx.initializers.truncated_normal(0.02)(rngs.params(), (num_global, dim)))
    # With window=None there is no window for sink tokens to reach past: attention is full.
    self.blocks = nnx.List([
        FoundationBlock(dim, num_heads, mlp_dim, dropout, window, num_global if window else 0,
                        chunk, rngs=rngs) for _ in range(num_layers)])
    self.norm = nnx.LayerNorm(dim, rngs=rngs)
    self.dropout = nnx.Dropout(dropout)
    self.horizon_heads = nnx.List([Dense(dim, dim, ("embed", "mlp"), rngs=rngs)
                                   for _ in range(horizon - 1)])
    self.genre_head = Dense(dim, num_genres, ("embed", "mlp"), rngs=rngs)
    self.event_head = Dense(dim, NUM_EVENT_TYPES, ("embed", "mlp"), rngs=rngs)

  def item_vectors(self, metadata: dict[str, jax.Array], keep_id: jax.Array | None = None,
                   learn: jax.Array | None = None) -> jax.Array:
    """Every item's vector [V, D] from the catalogue's metadata rows (`metadata[name]` [V, ...]);
    keep_id [V] False: that item from its metadata alone (unseen items, id dropout); learn [V]
    False: no gradient through that item (an item no training token names)."""
    return self.items(jnp.arange(self.num_items), metadata, keep_id, learn)

  def vectors_of(self, ids: jax.Array, metadata: dict[str, jax.Array],
                 keep_id: jax.Array | None = None, learn: jax.Array | None = None) -> jax.Array:
    """The vectors [N, D] of the items `ids` [N] alone (what a sampled-softmax step needs),
    equal to those rows of item_vectors; `metadata[name]` is the whole catalogue's [V, ...]."""
    return self.items(ids, {name: rows[ids] for name, rows in metadata.items()}, keep_id, learn)

  def init_new_items(self, ids: jax.Array) -> None:
    """A warm start's new items (ids the earlier run never saw) start as their metadata
    embedding alone: a zero id row, which is how an unseen item was represented in training (id
    dropout) and evaluation, so their first scores are already the metadata's."""
    table = self.items.id_embedding.embedding
    table[...] = table[...].at[ids].set(0.0)

  def __call__(self, inputs: jax.Array, fields: dict[str, jax.Array],
               item_table: jax.Array | None, rngs: nnx.Rngs | None = None,
               input_vectors: jax.Array | None = None,
               summary: jax.Array | None = None) -> jax.Array:
    """inputs [B, L] left-padded item ids, `fields` their token fields, item_table [V, D] from
    item_vectors (or, without a table, input_vectors [B, L, D]: the inputs' own vectors) ->
    hidden states [B, L, D]; position t summarises the tokens up to t. With history_summary,
    `summary` [B, D] is the mean vector of the items watched before the window."""
    valid = inputs > 0
    if input_vectors is None:
      input_vectors = item_table[inputs]
    x = self.tokens(input_vectors, fields, valid)
    if summary is not None:
      x = x + self.summary(summary)[:, None, :] * valid[..., None]
    x = self.dropout(x, deterministic=rngs is None, rngs=rngs) * valid[..., None]
    g = self.num_global
    if g:  # learned attention sinks before the history: all positions see them, they see none
      b = x.shape[0]
      x = jnp.concatenate([jnp.broadcast_to(self.global_tokens[...], (b, g, x.shape[-1])), x], 1)
      valid = jnp.concatenate([jnp.ones((b, g), bool), valid], 1)
    for block in self.blocks:
      x = block(x, valid, rngs) * valid[..., None]
    return self.norm(x[:, g:])

  def horizon_queries(self, hidden: jax.Array) -> list[jax.Array]:
    """The query for the item 1, 2, ..., h tokens ahead: the state itself, then projections."""
    return [hidden] + [head(hidden) for head in self.horizon_heads]

  def genre_logits(self, hidden: jax.Array) -> jax.Array:
    return self.genre_head(hidden)

  def event_logits(self, hidden: jax.Array) -> jax.Array:
    return self.event_head(hidden)
