"""The task for two-tower retrieval, trained with in-batch softmax and logQ correction.

Each step takes K random positions of each user's history window: the history up to a position
(with its timestamps and context) is a query, the next item its positive, and every other positive
in the batch a negative. With the SASRec query encoder one causal pass over the window gives the
history summary at every position; with pooling each position's history is pooled on its own.
In-batch negatives are drawn in proportion to popularity, so the logits are corrected by subtracting
log q(item) (Yi et al. 2019, "Sampling-bias-corrected neural modeling"), where q is estimated
online from the training stream (models/frequency.py) or taken from training-split counts.
Optionally, uniformly drawn catalogue items join the negatives (mixed negative sampling, Yang et
al. 2020), each corrected by its own sampling rate, so that items too rare to appear in batches are
still pushed away. An accidental hit (another row's positive equal to this row's) is removed rather
than counted as a negative. Evaluation shares the sequential task's protocol.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.data.features import categorical
from jaxrec.errors import UserError
from jaxrec.models.two_tower import TwoTower
from jaxrec.train.sequential import SequentialTask

NEG = -1e9


def corrected_logits(queries, items, positives, log_q, temperature):
  """In-batch logits [Q, Q]: <q_i, v_j> / T - log q_j, where log_q [Q] is the log sampling
  frequency of each column's item; accidental hits and padding columns (item 0) are masked."""
  logits = queries @ items.T / temperature - log_q[None, :]
  same = positives[None, :] == positives[:, None]
  masked = (same & ~jnp.eye(len(positives), dtype=bool)) | (positives[None, :] == 0)
  return jnp.where(masked, NEG, logits)


def mixed_negative_logits(queries, negatives, negative_items, positives, num_items,
                          temperature):
  """Logits [Q, N] of N negatives drawn uniformly from the catalogue's real items (ids 2..V-1),
  corrected by the log of their expected occurrences per batch, log(N / (V - 2)); a draw equal to
  the row's positive is masked."""
  log_q = jnp.log(negatives.shape[0] / (num_items - 2))
  logits = queries @ negative_items.T / temperature - log_q
  return jnp.where(negatives[None, :] == positives[:, None], NEG, logits)


class TwoTowerTask(SequentialTask):
  MODELS = {"two_tower": TwoTower}
  SHUFFLES_TIES = False  # trains on (history, item) pairs, not next-item windows
  FIELDS = ("timestamp", "hour", "device")

  def __init__(self, config):
    super().__init__(config)
    if config.loss.frequency not in ("streaming", "counts"):
      raise UserError(f"loss.frequency must be 'streaming' (estimated online, Yi et al.) or "
                      f"'counts' (training-split counts), got {config.loss.frequency!r}.")
    if config.loss.uniform_negatives < 0:
      raise UserError(f"loss.uniform_negatives must be >= 0, got {config.loss.uniform_negatives}.")
    ds = self.data
    self.item_features = categorical(ds.item_features)
    self.user_features = categorical(ds.user_features)
    # Items without training interactions have untrained id rows: they are scored from their
    # metadata alone, as a brand-new item would be.
    self.trained = (ds.item_counts > 0).astype(np.float32)

  def build_model(self, rngs):
    ds, cfg = self.data, self.config.model
    vocab_size = lambda name: len(ds.vocabs[name])
    return TwoTower(
        num_users=ds.num_users + 2, num_items=ds.num_items,
        item_feature_sizes={k: vocab_size(f"item_{k}") for k in self.item_features},
        user_feature_sizes={k: vocab_size(f"user_{k}") for k in self.user_features},
        num_devices=vocab_size("device"), dim=cfg.dim, hidden=cfg.hidden,
        title_buckets=cfg.title_buckets, frequency_alpha=self.config.loss.frequency_alpha,
        query_encoder=cfg.query_encoder, max_len=cfg.max_len, num_layers=cfg.num_layers,
        num_heads=cfg.num_heads, dropout=cfg.dropout, rngs=rngs)

  def _features(self, table: dict, ids: jax.Array) -> dict:
    return {k: jnp.asarray(v)[ids] for k, v in table.items()}

  def _query(self, model, batch, summary, position=None):
    """Query vectors from a history summary, with the context of the token at `position` [B]
    (default: the last)."""
    pick = (lambda x: x[:, -1]) if position is None else (lambda x: x[jnp.arange(len(x)), position])
    user = batch["user"]
    return model.user_tower(user, self._features(self.user_features, user), summary,
                            pick(batch["device"]), pick(batch["hour"]))

  def _pooled(self, model, history, timestamps, now):
    return model.user_tower.pooled_history(history, now[:, None] - timestamps,
                                           self.config.model.half_life_seconds)

  def personal_query(self, model, batch, items=None) -> jax.Array:
    """The query for each row's next item, from its whole history [B, D]."""
    if model.user_tower.encoder == "sasrec":
      summary = model.user_tower.sequence_states(batch["inputs"])[:, -1]
    else:
      summary = self._pooled(model, batch["inputs"], batch["timestamp"], batch["timestamp"][:, -1])
    return self._query(model, batch, summary)

  def personal_items(self, model) -> jax.Array:
    """Every item's embedding [V, D]; items unseen in training from metadata only."""
    items = jnp.arange(self.data.num_items)
    return model.item_tower(items, self._features(self.item_features, items),
                            keep_id=jnp.asarray(self.trained))

  def loss(self, model, batch, key):
    cfg = self.config.model
    inputs, targets, timestamps = batch["inputs"], batch["targets"], batch["timestamp"]
    b, length = inputs.shape
    k = self.config.loss.positions_per_user
    position_key, dropout_key, negative_key = jax.random.split(key, 3)
    # K positions per user among those with a next item, uniformly: [B, K].
    position = jax.random.categorical(position_key, jnp.where(targets > 0, 0.0, NEG), shape=(k, b)).T
    rows = jnp.arange(b)[:, None]
    flat = lambda x: x[rows, position].reshape(b * k)
    if model.user_tower.encoder == "sasrec":  # one causal pass: the state after every position
      states = model.user_tower.sequence_states(inputs, nnx.Rngs(dropout=dropout_key))
      summary = states[rows, position].reshape(b * k, -1)
    else:  # each position's history: the items up to it, with ages relative to it
      visible = jnp.arange(length)[None, None, :] <= position[..., None]  # [B, K, L]
      history = jnp.where(visible, inputs[:, None, :], 0).reshape(b * k, length)
      stamps = jnp.broadcast_to(timestamps[:, None, :], (b, k, length)).reshape(b * k, length)
      summary = self._pooled(model, history, stamps, flat(timestamps))
    repeated = {name: jnp.repeat(batch[name], k, axis=0) for name in ("user", "device", "hour")}
    queries = self._query(model, repeated, summary, position.reshape(b * k))
    positives = flat(targets)
    items = self._train_item_vectors(model, positives, dropout_key)
    if self.config.loss.frequency == "streaming":
      log_q = model.frequency.update(positives)
    else:  # "counts": static frequencies of the training split
      log_q = jnp.asarray(self.log_q)[positives]
    logits = corrected_logits(queries, items, positives, log_q, cfg.temperature)
    if num_uniform := self.config.loss.uniform_negatives:
      negatives = jax.random.randint(negative_key, (num_uniform,), 2, self.data.num_items)
      extra = mixed_negative_logits(
          queries, negatives,
          self._train_item_vectors(model, negatives, jax.random.fold_in(negative_key, 1)),
          positives, self.data.num_items, cfg.temperature)
      logits = jnp.concatenate([logits, extra], axis=1)
    row_loss = -jnp.diagonal(jax.nn.log_softmax(logits, axis=-1)[:, :len(positives)])
    valid = (positives > 0).astype(row_loss.dtype)
    return (row_loss * valid).sum() / jnp.maximum(valid.sum(), 1.0)

  def _train_item_vectors(self, model, items, dropout_key):
    """Item vectors with id dropout: a share of items is seen through its metadata alone."""
    keep_id = jax.random.bernoulli(dropout_key, 1 - self.config.model.id_dropout, items.shape)
    return model.item_tower(items, self._features(self.item_features, items),
                            keep_id.astype(jnp.float32))
