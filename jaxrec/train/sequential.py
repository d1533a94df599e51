"""The task for next-item sequential recommenders: SASRec, BERT4Rec, GRU4Rec.

Evaluation ranks the whole catalogue for each user's held-out item(s), with every item of the
user's history excluded (eval.exclude_seen=False: nothing excluded, RecBole's sequential protocol;
see jaxrec/eval/protocols.py); a sampled protocol (N negatives drawn once with a fixed seed) is
reported only beside it, under its own `sampled_` keys.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.data import pipelines, trending
from jaxrec.data.prepare import open_or_prepare
from jaxrec.data.tokenize import TOKEN_DTYPE
from jaxrec.data.vocab import FIRST_ID, OOV
from jaxrec.errors import UserError
from jaxrec.eval import protocols
from jaxrec.eval.metrics import ranking
from jaxrec.models.bert4rec import BERT4Rec
from jaxrec.models.gru4rec import GRU4Rec
from jaxrec.models.sasrec import SASRec
from jaxrec.train.losses import next_item_loss, watched_before, watched_so_far
from jaxrec.train.task import Task

MODELS = {"sasrec": SASRec, "bert4rec": BERT4Rec, "gru4rec": GRU4Rec}


GAP_FEATURES = 2  # gap_features' width


def trend_gate(dim: int, rngs: nnx.Rngs) -> nnx.Linear:
  """From the query and the request gap (`gap_features`): (the personal score's scale - 1, the
  weights of the trend features: TrendTable.features). It starts as "the personal score plus
  recent popularity" and learns how far to trust each, per user and per gap: a user back after
  weeks is served by what is popular now more than by the last session."""
  bias = np.zeros(1 + trending.NUM_FEATURES, np.float32)
  bias[1] = 1.0  # the window's counts
  return nnx.Linear(dim + GAP_FEATURES, len(bias), kernel_init=nnx.initializers.zeros_init(),
                    bias_init=lambda key, shape, dtype: jnp.asarray(bias, dtype), rngs=rngs)


def gap_features(seconds, has_history, xp=np):
  """[..., 2]: log1p(hours from the user's last event to the request), and 1 where the user has
  no event yet (the gap is then 0)."""
  hours = xp.maximum(seconds, 0) / 3600.0
  return xp.stack([xp.where(has_history, xp.log1p(hours), 0.0),
                   1.0 - has_history.astype(hours.dtype)], axis=-1).astype(xp.float32)


def trend_weights(model, hidden: jax.Array, gap: jax.Array) -> tuple[jax.Array, jax.Array]:
  """hidden [..., D], gap [..., 2] -> (personal scale [..., 1], trend weights [..., K])."""
  out = model.trend_gate(jnp.concatenate([hidden, gap.astype(hidden.dtype)], axis=-1))
  return 1.0 + out[..., :1], out[..., 1:]


class SequentialTask(Task):
  MODELS = MODELS
  SHUFFLES_TIES = True  # honours data.shuffle_ties (tasks.build_task refuses it elsewhere)
  FIELDS: tuple[str, ...] = ()  # token fields beside the item ids that the model reads
  eval_target_fields: tuple[str, ...] = ()  # fields of the held-out token that evaluation reads

  def __init__(self, config):
    if config.model.name not in self.MODELS:
      raise UserError(f"unknown model.name {config.model.name!r} for task {config.task!r}: use "
                      f"one of {', '.join(self.MODELS)}.")
    self.config = config
    self.data = open_or_prepare(config.data)
    counts = self.data.item_counts.astype(np.float64)
    self.log_q = np.log(np.maximum(counts, 1e-3) / counts.sum()).astype(np.float32)
    self.log_q[:2] = -1e9  # padding and OOV are never sampled
    self.ks = tuple(config.eval.ks)
    self.exclude_seen = protocols.exclude_seen(config.eval)
    self.by_history = protocols.by_history(self.data)
    self.exclude_watched = bool(config.loss.get("exclude_watched", False))
    self.shuffle_ties = bool(config.data.get("shuffle_ties", False))
    if self.exclude_watched and config.loss.name not in ("ce", "sampled_softmax"):
      raise UserError("loss.exclude_watched leaves watched items out of the training softmax: "
                      f"use loss.name ce or sampled_softmax (not {config.loss.name}).")
    self.label_smoothing = float(config.loss.get("label_smoothing", 0.0))
    if not 0 <= self.label_smoothing < 1 or (self.label_smoothing and config.loss.name != "ce"):
      raise UserError("loss.label_smoothing spreads that share of each label over the whole "
                      f"catalogue: give 0 <= it < 1 with loss.name ce (not "
                      f"{self.label_smoothing} with {config.loss.name}).")
    self.trend_days = float(config.model.get("trend_window_days", 0) or 0)
    if self.trend_days < 0 or (self.trend_days and (self.masked or config.loss.name != "ce")):
      raise UserError("model.trend_window_days adds the items' recent popularity to a next-item "
                      "model's full softmax: give a positive number of days with loss.name ce and "
                      f"sasrec, gru4rec or foundation (not {config.model.name} with "
                      f"{config.loss.name}, {self.trend_days} days), or 0 to turn it off.")
    # Training positions count what happened before their target among the training tokens;
    # an evaluated split counts everything before it (as the recent-popularity baselines do).
    self.trend = (trending.TrendTable(*trending.history_pool(self.data, "valid"),
                                      self.data.num_items, self.trend_days)
                  if self.trend_days else None)

  @property
  def input_fields(self) -> tuple[str, ...]:
    """Token fields laid out beside the inputs: the model's, and with the trend prior the
    timestamps its gate reads the request gap from."""
    return self.FIELDS + (("timestamp",) if self.trend is not None else ())

  def with_trend_gate(self, model, rngs):
    if self.trend is not None:
      model.trend_gate = trend_gate(self.config.model.dim, rngs)
    return model

  @property
  def masked(self) -> bool:
    return self.config.model.name == "bert4rec"

  @property
  def targets_after(self) -> int | None:
    """Train on tokens after this time only (a warm start's new data); None trains on all."""
    return self.config.data.get("train_targets_after", 0) or None

  def build_model(self, rngs):
    kwargs = dict(self.config.model)
    kwargs.pop("trend_window_days", None)
    cls = MODELS[kwargs.pop("name")]
    return self.with_trend_gate(cls(self.data.num_items, rngs=rngs, **kwargs), rngs)

  def train_data(self, seed: int):
    options = pipelines.PipelineOptions(
        batch_size=pipelines.process_batch_size(self.config.train.batch_size), seed=seed,
        num_epochs=None)
    return pipelines.sequence_dataset(
        self.data, "train", max_len=self.config.model.max_len,
        objective="masked" if self.masked else "next",
        mask_prob=self.config.loss.get("mask_prob", 0.2), fields=self.input_fields,
        target_fields=("timestamp",) if self.trend is not None else (),
        empty_history_target=bool(self.config.loss.get("empty_history_target", False)),
        shuffle_ties=self.shuffle_ties,
        targets_after=self.targets_after, with_seen=self.exclude_watched, options=options)

  def loss(self, model, batch, key):
    dropout_key, sample_key = jax.random.split(key)
    hidden = model(batch["inputs"], rngs=nnx.Rngs(dropout=dropout_key))
    cfg = self.config.loss
    bias = None
    if self.trend is not None:
      hidden, bias = self.trend_terms(model, hidden, batch, batch["target_timestamp"])
    return next_item_loss(cfg.name, hidden, batch["targets"], model.item_vectors(),
                          key=sample_key, num_negatives=cfg.num_negatives,
                          log_q=jnp.asarray(self.log_q), gbce_t=cfg.gbce_t,
                          excluded=functools.partial(self.excluded, batch), bias=bias,
                          smoothing=self.label_smoothing)

  def trend_terms(self, model, hidden, batch, times) -> tuple[jax.Array, jax.Array]:
    """Training positions' hidden states [B, L, D] whose targets fall at `times` [B, L] -> (the
    states with the personal scale applied, the prior [B, L, V]): the counts before each
    target's time, weighted by the gate from the state and the gap after its own input."""
    features = self.trend.features(times.astype(jnp.float32), self.trend.device_tables(jnp),
                                   xp=jnp)
    gap = gap_features(times - batch["timestamp"], batch["inputs"] != 0, xp=jnp)
    scale, weights = trend_weights(model, hidden, gap)
    return hidden * scale, jnp.einsum("...k,...vk->...v", weights, features)

  def excluded(self, batch, ids: jax.Array | None = None) -> jax.Array | None:
    """With loss.exclude_watched, what each position's softmax leaves out [B, L, N] ([B, 1, N]
    for BERT4Rec): the items (`ids` [N], or the whole catalogue) the user watched before it, in
    its window or before (`batch["seen"]`); BERT4Rec reads its whole window at once, so every
    other item of the window too (a masked position's own target stays). Evaluation and serving
    never rank a watched item; a softmax that keeps them asks one query vector to push down
    every item the user has watched, which it cannot, and in a world without re-watches teaches
    it that an item popular with everyone is unlikely next (most users have watched it
    already), so it ranks the unwatched popular ones low."""
    if not self.exclude_watched:
      return None
    if ids is None:
      ids = jnp.arange(self.data.num_items)
    if self.masked:  # the window with its masked items restored, all of it read at once
      window = jnp.where(batch["targets"] > 0, batch["targets"], batch["inputs"])
      watched = watched_so_far(window, ids, self.data.num_items)[:, -1:]
    else:
      watched = watched_so_far(batch["inputs"], ids, self.data.num_items)
    return watched | watched_before(batch["seen"], ids)[:, None, :]

  def eval_batches(self, split: str):
    options = pipelines.PipelineOptions(
        batch_size=pipelines.process_batch_size(self.config.eval.batch_size))
    negatives = self._negatives(split) if self.config.eval.sampled_negatives else None
    for batch in pipelines.sequence_dataset(self.data, split, max_len=self.config.model.max_len,
                                            max_targets=self.config.eval.max_targets,
                                            fields=self.input_fields,
                                            target_fields=self.eval_target_fields,
                                            with_seen=True, options=options):
      if negatives is not None:
        batch["negatives"] = negatives[batch["user"] - 2]
      if self.trend is not None:
        table, times = self._eval_trend(split)
        now = times[batch["user"] - FIRST_ID]
        batch["trend"] = table.features(now).astype(np.float32)
        self._add_request_gap(batch, now)
      yield batch

  def _add_request_gap(self, batch: dict, now) -> None:
    """`request_gap` [B, 2] (gap_features) from each row's request time and its window's last
    input; the timestamps are not needed beyond it."""
    last = batch.pop("timestamp")[:, -1].astype(np.float64)
    batch["request_gap"] = gap_features(np.asarray(now, np.float64) - last,
                                        batch["inputs"][:, -1] != 0)

  @functools.lru_cache(maxsize=2)
  def _eval_trend(self, split: str) -> tuple[trending.TrendTable, np.ndarray]:
    """(the table of everything before `split`, each user's request time on it)."""
    table = trending.TrendTable(*trending.history_pool(self.data, split), self.data.num_items,
                                self.trend_days, start=self.trend.start)
    return table, trending.request_times(self.data, split)

  @functools.cached_property
  def _export_trend(self) -> np.ndarray:
    """[V, K] the trend features just after the log's last interaction: what an exported
    index and the serving job rank by until the next export."""
    stamps, items = trending.history_pool(self.data, None)
    table = trending.TrendTable(stamps, items, self.data.num_items, self.trend_days)
    return table.features(np.array(stamps.max(initial=0.0) + table.bucket)).astype(np.float32)

  @functools.lru_cache(maxsize=2)
  def _negatives(self, split: str) -> np.ndarray:
    """Per-user sampled-protocol negatives, drawn once with a fixed seed (indexed by record)."""
    lo, hi = pipelines._split_range(self.data, split)
    tokens = self.data.user_tokens(np.arange(self.data.num_users) + 2)
    histories = [t["item"][:lo[r]] for r, t in enumerate(tokens)]
    targets = np.array([t["item"][lo[r]] if hi[r] > lo[r] else 0 for r, t in enumerate(tokens)])
    return ranking.draw_negatives(
        self.data.num_items, histories, targets, self.config.eval.sampled_negatives,
        by=self.config.eval.sampled_by, counts=self.data.item_counts, seed=0)

  def history_batch(self, histories: list[np.ndarray], users, size: int | None = None,
                    now=None) -> dict[str, np.ndarray]:
    """Users' ids [B] and token histories (TOKEN_DTYPE, oldest first) -> query_vectors' input over
    each one's most recent window, laid out as the evaluation pipeline lays it out (the same
    function): how serving turns a user's history into the query of a sequence model. `size`
    pads the batch to that many rows (one compiled shape) with unknown users without history.
    `now` [B] (Unix seconds): each request's time, for a model that reads it (the trend prior's
    gate; the foundation model with model.request_gap)."""
    size = len(histories) if size is None else size
    padding = size - len(histories)
    histories = list(histories) + [np.zeros(0, TOKEN_DTYPE)] * padding
    batch = pipelines.window_batch(histories, self.config.model.max_len, self.input_fields)
    batch["user"] = np.pad(np.asarray(users, np.int32), (0, padding), constant_values=OOV)
    if self.trend is not None:
      if now is None:
        raise ValueError("a sequential model with the trend prior reads the request's time: "
                         "pass now (Unix seconds per history)")
      self._add_request_gap(batch, np.pad(np.asarray(now, np.float64), (0, padding)))
    return batch

  def personal_items(self, model) -> jax.Array:
    """[V, D] every item's vector in the model's own space (no trend features)."""
    return model.item_vectors()

  def personal_query(self, model, batch, items=None) -> jax.Array:
    """[B, D] the model's query after each row's last token (`items`: personal_items, for a
    model that reads them; computed when not given)."""
    return model.query(batch["inputs"])

  def item_vectors(self, model):
    """[V, D] (with the trend prior [V, D + K]: the export time's trend features appended, so
    an index's inner product is the model's score at that time)."""
    items = self.personal_items(model)
    if self.trend is None:
      return items
    return jnp.concatenate([items, jnp.asarray(self._export_trend)], axis=-1)

  def query_vectors(self, model, batch):
    query = self.personal_query(model, batch)
    if self.trend is None:
      return query
    scale, weights = trend_weights(model, query, batch["request_gap"])
    return jnp.concatenate([query * scale, weights], axis=-1)

  def eval_shared(self, model):
    return self.personal_items(model)

  def scores(self, model, batch, items) -> jax.Array:
    """[B, V] every item's score for each row of an eval batch; with the trend prior, at each
    row's request time (`batch["trend"]`)."""
    query = self.personal_query(model, batch, items)
    if self.trend is None:
      return query @ items.T
    scale, weights = trend_weights(model, query, batch["request_gap"])
    return (query * scale) @ items.T + jnp.einsum("bk,bvk->bv", weights, batch["trend"])

  def eval_step(self, model, batch, items):
    scores = self.scores(model, batch, items)
    scores = ranking.mask_scores(scores, batch["seen"] if self.exclude_seen else None)
    out = ranking.topk_metrics(scores, batch["targets"], self.ks, list_k=ranking.LIST_K)
    out[ranking.HAS_HISTORY] = ranking.has_history(batch["inputs"])
    if "negatives" in batch:
      out.update(ranking.sampled_metrics(scores, batch["targets"][:, 0], batch["negatives"],
                                         self.ks))
    return out

  def metric_accumulator(self):
    return ranking.MetricAccumulator(by_history=self.by_history)

  def protocol(self, split: str) -> dict:
    out = protocols.ranking_protocol(self.data, split, self.config.eval)
    if self.exclude_watched:
      out["training"] = "loss.exclude_watched: watched items left out of the training softmax"
    if self.trend is not None:
      out["trend_prior"] = (f"model.trend_window_days={self.trend_days:g}: item counts over the "
                            "window and all time before each request, weighted by the query")
    if self.config.eval.sampled_negatives:
      out["sampled_protocol"] = (
          f"{self.config.eval.sampled_negatives} {self.config.eval.sampled_by} negatives per "
          "user drawn once (seed 0); reported as sampled_*, not comparable to full ranking")
    return out
