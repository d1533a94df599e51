"""The foundation model's input: one embedding per merged event token, from every field it carries.

A token is what the tokenizer wrote (data/tokenize.py): the item, the strongest action and the
bitmask of all actions, the engagement (summed value: a watch fraction or a rating), how many raw
events merged into it, device, locale, hour, weekday and the log-bucketed gap since the previous
token. The item part (id plus metadata) comes from the model's item encoder, which the output
layer shares; every other field has a table here. Fields combine by sum, or by concatenation and a
projection (which lets the model weigh fields against each other); a learned position is added.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.data.events import NUM_EVENT_TYPES
from jaxrec.data.tokenize import NUM_GAP_BUCKETS, NUM_HOURS, NUM_WEEKDAYS
from jaxrec.errors import UserError
from jaxrec.models.layers import Dense, embed_init

# Engagement buckets by upper edge: watch fractions fall below 1.0 in fine steps; ratings 1..5
# land one per bucket. Bucket 0 is padding.
ENGAGEMENT_EDGES = (0.1, 0.25, 0.5, 0.75, 0.95, 1.25, 1.75, 2.5, 3.5, 4.5, 10.0, 100.0)
NUM_ENGAGEMENT_BUCKETS = len(ENGAGEMENT_EDGES) + 2
NUM_COUNT_BUCKETS = 12  # 1 + log2(events merged), capped
COMBINES = ("sum", "concat")
# The token fields the model reads from the pipeline, beside the item id.
TOKEN_FIELDS = ("event", "actions", "value", "count", "device", "locale", "hour", "weekday", "gap")


def engagement_bucket(value: jax.Array, valid: jax.Array) -> jax.Array:
  bucket = 1 + jnp.searchsorted(jnp.asarray(ENGAGEMENT_EDGES, jnp.float32), value.astype(jnp.float32))
  return jnp.where(valid, bucket, 0)


def count_bucket(count: jax.Array) -> jax.Array:
  """0 for padding, then 1 + floor(log2(count)): one event, two or three, four to seven, ..."""
  log = jnp.floor(jnp.log2(jnp.maximum(count, 1).astype(jnp.float32))).astype(jnp.int32)
  return jnp.where(count > 0, jnp.minimum(1 + log, NUM_COUNT_BUCKETS - 1), 0)


def action_bits(actions: jax.Array) -> jax.Array:
  """[..., T] 0/1 floats: which event types the token merged (its bitmask, unpacked)."""
  return ((actions[..., None] >> jnp.arange(NUM_EVENT_TYPES)) & 1).astype(jnp.float32)


def field_sizes(num_devices: int, num_locales: int) -> dict[str, int]:
  """Table sizes of the single-id fields (device and locale come from the data's vocabularies)."""
  return {"event": NUM_EVENT_TYPES, "engagement": NUM_ENGAGEMENT_BUCKETS,
          "count": NUM_COUNT_BUCKETS, "device": max(num_devices, 2),
          "locale": max(num_locales, 2), "hour": NUM_HOURS, "weekday": NUM_WEEKDAYS,
          "gap": NUM_GAP_BUCKETS}


class EventTokenEmbedding(nnx.Module):
  """(item vectors [B, L, D], token fields [B, L] each) -> token embeddings [B, L, D]."""

  def __init__(self, sizes: dict[str, int], dim: int, max_len: int, combine: str = "sum", *,
               rngs: nnx.Rngs):
    if combine not in COMBINES:
      raise UserError(f"model.combine must be one of {', '.join(COMBINES)}, got {combine!r}.")
    self.combine = combine
    self.dim = dim
    self.tables = nnx.Dict({name: nnx.Embed(size, dim, embedding_init=embed_init("vocab", "embed"),
                                            rngs=rngs) for name, size in sizes.items()})
    self.actions = nnx.Embed(NUM_EVENT_TYPES, dim, embedding_init=embed_init(None, "embed"),
                             rngs=rngs)
    self.position = nnx.Embed(max_len, dim, embedding_init=embed_init(None, "embed"), rngs=rngs)
    if combine == "concat":
      # item + each table + actions -> dim
      self.project = Dense((len(sizes) + 2) * dim, dim, ("mlp", "embed"), rngs=rngs)

  def field_ids(self, fields: dict[str, jax.Array], valid: jax.Array) -> dict[str, jax.Array]:
    """Raw token fields -> the ids of each table (engagement and count bucketed); padding -> 0."""
    ids = {"engagement": engagement_bucket(fields["value"], valid),
           "count": count_bucket(jnp.where(valid, fields["count"], 0))}
    for name in self.tables:
      if name not in ids:
        ids[name] = jnp.where(valid, fields[name], 0)
    return ids

  def __call__(self, item_vectors: jax.Array, fields: dict[str, jax.Array],
               valid: jax.Array) -> jax.Array:
    ids = self.field_ids(fields, valid)
    parts = [item_vectors] + [table(ids[name]) for name, table in self.tables.items()]
    parts.append(action_bits(jnp.where(valid, fields["actions"], 0)) @ self.actions.embedding[...])
    if self.combine == "sum":
      x = sum(parts[1:], parts[0])
    else:
      x = self.project(jnp.concatenate(parts, axis=-1))
    # As in SASRec: embeddings initialised small, scaled up against the learned positions.
    length = item_vectors.shape[1]
    x = x * jnp.sqrt(self.dim) + self.position(jnp.arange(length))[None]
    return x * valid[..., None]

