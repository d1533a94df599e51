"""The task for two-tower retrieval, trained with in-batch softmax and logQ correction.

Each step takes K random positions of each user's history window: the history up to a position
(with its timestamps and context) is a query, the next item its positive, and every other positive
in the batch a negative. In-batch negatives are drawn in proportion to popularity, so the logits
are corrected by subtracting log q(item) (Yi et al. 2019, "Sampling-bias-corrected neural
modeling"); an accidental hit (another row's positive equal to this row's) is removed rather than
counted as a negative. Evaluation shares the sequential task's protocol.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.eval import metrics
from jaxrec.models.two_tower import TwoTower
from jaxrec.train.sequential import SequentialTask

NEG = -1e9


def corrected_logits(queries, items, positives, log_q, temperature):
  """In-batch logits [Q, Q]: <q_i, v_j> / T - log q(item_j), accidental hits masked."""
  logits = queries @ items.T / temperature - log_q[positives][None, :]
  same = positives[None, :] == positives[:, None]
  return jnp.where(same & ~jnp.eye(len(positives), dtype=bool), NEG, logits)


class TwoTowerTask(SequentialTask):
  MODELS = {"two_tower": TwoTower}
  FIELDS = ("timestamp", "hour", "device")

  def __init__(self, config):
    super().__init__(config)
    ds = self.data
    int_features = lambda table: {k: v for k, v in table.items() if v.dtype == np.int32}
    self.item_features = int_features(ds.item_features)
    self.user_features = int_features(ds.user_features)
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
        title_buckets=cfg.title_buckets, rngs=rngs)

  def _features(self, table: dict, ids: jax.Array) -> dict:
    return {k: jnp.asarray(v)[ids] for k, v in table.items()}

  def _query(self, model, user, history, timestamps, now, device, hour):
    return model.user_tower(user, self._features(self.user_features, user), history,
                            now[:, None] - timestamps, device, hour,
                            self.config.model.half_life_seconds)

  def item_vectors(self, model) -> jax.Array:
    """Every item's embedding [V, D]; items unseen in training from metadata only."""
    items = jnp.arange(self.data.num_items)
    return model.item_tower(items, self._features(self.item_features, items),
                            keep_id=jnp.asarray(self.trained))

  def loss(self, model, batch, key):
    cfg = self.config.model
    inputs, targets, timestamps = batch["inputs"], batch["targets"], batch["timestamp"]
    b, length = inputs.shape
    k = self.config.loss.positions_per_user
    position_key, dropout_key = jax.random.split(key)
    # K positions per user among those with a next item, uniformly.
    position = jax.random.categorical(position_key, jnp.where(targets > 0, 0.0, NEG), shape=(k, b)).T
    rows = jnp.arange(b)[:, None]
    visible = jnp.arange(length)[None, None, :] <= position[..., None]  # [B, K, L]
    history = jnp.where(visible, inputs[:, None, :], 0).reshape(b * k, length)
    stamps = jnp.broadcast_to(timestamps[:, None, :], (b, k, length)).reshape(b * k, length)
    flat = lambda x: x[rows, position].reshape(b * k)
    queries = self._query(model, jnp.repeat(batch["user"], k), history, stamps,
                          flat(timestamps), flat(batch["device"]), flat(batch["hour"]))
    positives = flat(targets)
    keep_id = jax.random.bernoulli(dropout_key, 1 - cfg.id_dropout, positives.shape)
    items = model.item_tower(positives, self._features(self.item_features, positives),
                             keep_id.astype(queries.dtype))
    logits = corrected_logits(queries, items, positives, jnp.asarray(self.log_q),
                              cfg.temperature)
    return -jnp.mean(jnp.diagonal(jax.nn.log_softmax(logits, axis=-1)))

  def eval_step(self, model, batch):
    now = batch["timestamp"][:, -1]
    queries = self._query(model, batch["user"], batch["inputs"], batch["timestamp"], now,
                          batch["device"][:, -1], batch["hour"][:, -1])
    scores = metrics.mask_scores(queries @ self.item_vectors(model).T, batch["seen"])
    return metrics.topk_metrics(scores, batch["targets"], self.ks)
