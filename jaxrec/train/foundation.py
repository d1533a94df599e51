"""The task `foundation`: the foundation model's objectives, evaluation and embeddings.

Objectives, all over one causal pass of each user's history window (models/foundation.py):
- next-token prediction, each position weighted by its target token's action strength
  (`loss.event_weights`, by event type: a full watch counts more than a click, a click more than
  an impression) times (1 + `loss.value_weight` × engagement), e.g. a 5-star rating more than a
  1-star one;
- multi-token prediction: the item 2..h tokens ahead (`loss.horizon`), each step down-weighted
  by `loss.horizon_decay`;
- auxiliary heads: the next token's genres (`loss.genre_weight`) and event type
  (`loss.event_type_weight`);
- full softmax over the catalogue (`loss.name="ce"`), or sampled softmax with logQ correction for
  large catalogues (`"sampled_softmax"`): negatives drawn from an alias table (O(K)), and only the
  vectors of the step's inputs, targets and negatives computed, so a step's cost does not grow
  with the catalogue (the optimizer's dense update of the id table aside);
- with `loss.exclude_watched`, each position's softmax leaves out the items the user watched
  before it, as evaluation and serving do (for logs without re-watches; see `excluded`).
With `model.request_gap`, each position also reads the gap bucket of the token after it (`gap`
shifted by one): the time until the next request, known when it arrives. The last position's
comes from the batch's `now_gap`: in training the last target's gap, in evaluation the held-out
token's, in serving and the ranker's user feature now - the last event (`history_batch`).
With `model.history_summary`, every position also reads the mean vector of the items the user
watched before the window (`summary`): in training the window's `seen` set, in evaluation and
serving the part of the history older than the window.
Evaluation is the sequential task's: full ranking of the whole catalogue from the last state,
every earlier item of the user excluded. item_vectors / query_vectors make it exportable.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.data import events as ev
from jaxrec.data import pipelines
from jaxrec.data.features import categorical
from jaxrec.data.tokenize import NUM_GAP_BUCKETS, gap_bucket
from jaxrec.errors import UserError
from jaxrec.models.event_tokens import TOKEN_FIELDS, field_sizes
from jaxrec.models.foundation import FoundationModel
from jaxrec.train.losses import (alias_table, full_softmax_nll, sample_by_alias,
                                 sampled_softmax_nll_of)
from jaxrec.train.sequential import SequentialTask
from jaxrec.train.unseen_years import clamp_unseen_years

SOFTMAXES = ("ce", "sampled_softmax")
TARGET_FIELDS = ("event", "value")


def weighted_mean(per_position: jax.Array, weights: jax.Array) -> jax.Array:
  return (per_position * weights).sum() / jnp.maximum(weights.sum(), 1e-9)


def token_weights(targets, target_event, target_value, event_weights, value_weight):
  """[B, L]: event_weights[type] × (1 + value_weight × value) where there is a target, else 0."""
  weights = event_weights[target_event] * (1.0 + value_weight * target_value)
  return jnp.where(targets > 0, weights, 0.0)


def shift_ahead(x: jax.Array, steps: int) -> jax.Array:
  """x [B, L, ...] -> x[:, t + steps] at position t, zeros past the end (no target there)."""
  if steps == 0:
    return x
  pad = jnp.zeros((x.shape[0], steps) + x.shape[2:], x.dtype)
  return jnp.concatenate([x[:, steps:], pad], axis=1)


def genre_nll(logits: jax.Array, genres: jax.Array) -> jax.Array:
  """Cross-entropy [B, L] of genre logits [B, L, G] against the next item's genres [B, L, K]
  (0 = padding), spread evenly over them; 0 where the item has none."""
  hits = jax.nn.one_hot(genres, logits.shape[-1]).at[..., 0].set(0).sum(-2)  # [B, L, G]
  count = hits.sum(-1)
  target = hits / jnp.maximum(count, 1.0)[..., None]
  return jnp.where(count > 0, -(target * jax.nn.log_softmax(logits)).sum(-1), 0.0)


def event_nll(logits: jax.Array, events: jax.Array) -> jax.Array:
  """Cross-entropy [B, L] of event-type logits against the next token's type."""
  log_p = jax.nn.log_softmax(logits)
  return -jnp.take_along_axis(log_p, events[..., None], axis=-1)[..., 0]


def event_weight_table(weights) -> np.ndarray:
  """config loss.event_weights (event type name -> weight) -> [NUM_EVENT_TYPES]; unnamed: 1."""
  table = np.ones(ev.NUM_EVENT_TYPES, np.float32)
  names = {t.name.lower(): int(t) for t in ev.EventType}
  for name, weight in dict(weights).items():
    if name not in names:
      raise UserError(f"loss.event_weights has unknown event type {name!r}: use "
                      f"{', '.join(sorted(names))}.")
    if weight < 0:
      raise UserError(f"loss.event_weights.{name} must be >= 0, got {weight}.")
    table[names[name]] = weight
  return table


def select_metadata(available: dict[str, np.ndarray], names: str) -> dict[str, np.ndarray]:
  """The metadata an item vector reads: `names` ("genres,year"), or every field when empty —
  to leave out a field that says little about taste (a random title word), or to measure what
  each field is worth."""
  if not names.strip():
    return available
  chosen = [name.strip() for name in names.split(",") if name.strip()]
  unknown = [name for name in chosen if name not in available]
  if unknown:
    raise UserError(f"model.item_metadata names {', '.join(unknown)}, which this dataset's items "
                    f"lack; they have {', '.join(sorted(available)) or 'no metadata'} (leave it "
                    "empty for all).")
  return {name: available[name] for name in chosen}


def future_positions(shape, window: int, key) -> jax.Array:
  """[B, L] for each position t, a position drawn uniformly from t .. t + window - 1 (those
  inside the sequence): the target there is an item the user watches within `window` tokens,
  in this session or a later one."""
  positions = jnp.arange(shape[1])
  reach = jnp.minimum(window, shape[1] - positions)
  offset = jnp.floor(jax.random.uniform(key, shape) * reach).astype(jnp.int32)
  return positions + offset


class FoundationTask(SequentialTask):
  MODELS = {"foundation": FoundationModel}
  FIELDS = TOKEN_FIELDS

  def __init__(self, config):
    super().__init__(config)
    cfg = config.loss
    if cfg.name not in SOFTMAXES:
      raise UserError(f"loss.name {cfg.name!r} is not a foundation objective: use 'ce' (full "
                      "softmax) or 'sampled_softmax' (logQ-corrected, for large catalogues).")
    if cfg.horizon < 1:
      raise UserError(f"loss.horizon must be >= 1 (1 = next token only), got {cfg.horizon}.")
    if cfg.get("future_weight", 0.0) and cfg.name != "ce":
      raise UserError("loss.future_weight needs the full softmax (loss.name=ce).")
    if cfg.get("future_weight", 0.0) and cfg.future_window < 1:
      raise UserError(f"loss.future_window must be >= 1, got {cfg.future_window}.")
    if not 0 <= config.model.id_dropout < 1:
      raise UserError(f"model.id_dropout must be in [0, 1), got {config.model.id_dropout}.")
    self.event_weights = event_weight_table(cfg.event_weights)
    # The integer metadata tables (genres, year, title words), indexed by item id.
    self.metadata = select_metadata(categorical(self.data.item_features),
                                    config.model.get("item_metadata", ""))
    # Items without training interactions have untrained id rows: metadata alone stands for them.
    self.trained = self.data.item_counts > 0
    self.request_gap = bool(config.model.get("request_gap", False))
    self.history_summary = bool(config.model.get("history_summary", False))
    if "year" in self.metadata:  # a year only new items carry has an untrained row: see the module
      self.metadata["year"] = clamp_unseen_years(
          self.metadata["year"], self.trained, self.data.vocabs["item_year"])

  def build_model(self, rngs):
    ds, cfg = self.data, dict(self.config.model)
    cfg.pop("name"), cfg.pop("id_dropout"), cfg.pop("item_metadata", None)
    cfg.pop("request_gap", None), cfg.pop("trend_window_days", None)
    vocab_size = lambda name: len(ds.vocabs[name])
    genres = vocab_size("item_genres") if "genres" in self.metadata else 2
    sizes = field_sizes(vocab_size("device"), vocab_size("locale"))
    if self.request_gap:
      sizes["request_gap"] = NUM_GAP_BUCKETS
    return self.with_trend_gate(FoundationModel(
        ds.num_items, {k: vocab_size(f"item_{k}") for k in self.metadata}, sizes, genres,
        horizon=self.config.loss.horizon, rngs=rngs, **cfg), rngs)

  def train_data(self, seed: int):
    options = pipelines.PipelineOptions(
        batch_size=pipelines.process_batch_size(self.config.train.batch_size), seed=seed,
        num_epochs=None)
    return pipelines.sequence_dataset(
        self.data, "train", max_len=self.config.model.max_len, fields=self.input_fields,
        target_fields=(TARGET_FIELDS + ("gap",) * self.request_gap
                       + ("timestamp",) * (self.trend is not None)),
        targets_after=self.targets_after, with_seen=self.exclude_watched or self.history_summary,
        shuffle_ties=self.shuffle_ties, options=options)

  def _metadata(self) -> dict[str, jax.Array]:
    return {k: jnp.asarray(v) for k, v in self.metadata.items()}

  def _fields(self, batch) -> dict[str, jax.Array]:
    fields = {name: batch[name] for name in self.FIELDS}
    if self.request_gap:  # the gap until each position's next request (see the module)
      now_gap = batch["now_gap"] if "now_gap" in batch else batch["target_gap"][:, -1]
      fields["request_gap"] = jnp.concatenate([batch["gap"][:, 1:], now_gap[:, None]], axis=1)
    return fields

  @property
  def eval_target_fields(self) -> tuple[str, ...]:
    return ("gap",) if self.request_gap else ()

  def eval_batches(self, split: str):
    for batch in super().eval_batches(split):
      if self.request_gap:  # the request is the held-out token's: it arrives after its gap
        batch["now_gap"] = batch.pop("target_gap")[:, 0]
      yield batch

  def history_batch(self, histories, users, size=None, now=None):
    """As the sequential task's; with model.request_gap, `now` [B] (Unix seconds) is each
    request's time, whose gap after the history's last event the last position reads; with
    model.history_summary, `seen` holds each whole history, as in an evaluation batch."""
    batch = super().history_batch(histories, users, size, now)
    if self.history_summary:  # the whole history, as evaluation's `seen` holds it
      seen = pipelines.history_items(histories)
      batch["seen"] = np.pad(seen, ((0, len(batch["user"]) - len(seen)), (0, 0)))
    if self.request_gap:
      if now is None:
        raise ValueError("a foundation model with model.request_gap reads the request's time: "
                         "pass now (Unix seconds per history)")
      gaps = [gap_bucket(t - h["timestamp"][-1]) if len(h) else 0 for h, t in zip(histories, now)]
      batch["now_gap"] = np.pad(np.array(gaps, np.int32), (0, len(batch["user"]) - len(gaps)))
    return batch

  def loss(self, model, batch, key):
    dropout_key, sample_key, id_key = jax.random.split(key, 3)
    keep, learn = self.id_masks(id_key)
    rngs = nnx.Rngs(dropout=dropout_key)
    if self.config.loss.name == "ce":
      items = model.item_vectors(self._metadata(), keep, learn)
      summary = self.summary(batch, lambda ids: items[ids], training=True)
      hidden = model(batch["inputs"], self._fields(batch), items, rngs=rngs, summary=summary)
      return self.objective(model, hidden, batch, items, sample_key)
    # Sampled softmax reads the vectors of the inputs, the targets and the negatives only:
    # O(B·L + K) item encodings a step instead of the whole catalogue's.
    inputs, targets = batch["inputs"], batch["targets"]
    negatives = self.sample_negatives(sample_key)
    ids = jnp.concatenate([inputs.ravel(), targets.ravel(), negatives.ravel()])
    vectors = model.vectors_of(ids, self._metadata(), keep[ids], learn[ids])
    tokens = inputs.size
    input_vectors = vectors[:tokens].reshape(inputs.shape + (-1,))
    target_vectors = vectors[tokens:2 * tokens].reshape(targets.shape + (-1,))
    negative_vectors = vectors[2 * tokens:].reshape(negatives.shape + (-1,))
    summary = self.summary(batch, lambda ids: model.vectors_of(
        ids.ravel(), self._metadata(), keep[ids.ravel()], learn[ids.ravel()]).reshape(
            ids.shape + (-1,)), training=True)
    hidden = model(inputs, self._fields(batch), None, rngs=rngs, input_vectors=input_vectors,
                   summary=summary)
    log_q = jnp.asarray(self.log_q)
    nll = lambda query, step, step_targets, times: sampled_softmax_nll_of(
        query, step_targets, shift_ahead(target_vectors, step), negatives[step],
        negative_vectors[step], log_q, self.excluded(batch, negatives[step]))
    return self.weighted_objective(model, hidden, batch, nll, sample_key)

  def id_masks(self, key) -> tuple[jax.Array, jax.Array]:
    """(keep [V], learn [V]) for one step. Id dropout: each trained item keeps its id with
    probability 1 - model.id_dropout, else is its metadata alone. An item no training token
    names is its metadata alone, as in evaluation, and passes no gradient: a negative that is
    never a target would only push down the metadata rows that new items alone carry (a release
    year later than every trained item's), ranking every new item below the rest."""
    learn = jnp.asarray(self.trained)
    keep = jax.random.bernoulli(key, 1.0 - self.config.model.id_dropout, learn.shape) & learn
    return keep, learn

  def sample_negatives(self, key) -> jax.Array:
    """[horizon, K] sampled-softmax negatives, by popularity q: one set per horizon step."""
    cfg = self.config.loss
    if getattr(self, "_alias_of", None) is not self.log_q:  # built once per log_q
      self._alias, self._alias_of = alias_table(self.log_q), self.log_q
    return sample_by_alias(key, self._alias, cfg.horizon * cfg.num_negatives).reshape(
        cfg.horizon, cfg.num_negatives)

  def objective(self, model, hidden, batch, items, key) -> jax.Array:
    """The weighted sum of every objective for hidden states [B, L, D] of a training batch, with
    every item's vector items [V, D] at hand (the full softmax needs them all)."""
    if self.config.loss.name == "ce":
      exclude = self.excluded(batch)

      def nll(query, step, step_targets, times):
        bias = None
        if self.trend is not None:  # the prior at each target's time
          query, bias = self.trend_terms(model, query, batch, times)
        return full_softmax_nll(query, step_targets, items, exclude, bias, self.label_smoothing)
    else:
      negatives = self.sample_negatives(key)
      nll = lambda query, step, step_targets, times: sampled_softmax_nll_of(
          query, step_targets, items[step_targets], negatives[step], items[negatives[step]],
          jnp.asarray(self.log_q), self.excluded(batch, negatives[step]))
    return self.weighted_objective(model, hidden, batch, nll, key)

  def weighted_objective(self, model, hidden, batch, nll, key) -> jax.Array:
    """The weighted sum of every objective; nll(query, step, targets, times) is the next-item
    loss [B, L] of the queries for the items `step` tokens ahead, at those items' times (None
    without the trend prior); `key` draws the future-window targets (loss.future_weight)."""
    cfg = self.config.loss
    targets = batch["targets"]
    times = batch.get("target_timestamp") if self.trend is not None else None
    at = lambda where: None if times is None else where(times)  # noqa: E731
    weights = token_weights(targets, batch["target_event"], batch["target_value"],
                            jnp.asarray(self.event_weights), cfg.value_weight)
    total = 0.0
    for step, query in enumerate(model.horizon_queries(hidden)):
      step_nll = nll(query, step, shift_ahead(targets, step),
                     at(lambda t: shift_ahead(t, step)))
      total = total + cfg.horizon_decay ** step * weighted_mean(step_nll, shift_ahead(weights, step))
    if cfg.get("future_weight", 0.0):
      ahead = future_positions(targets.shape, cfg.future_window, key)
      future = jnp.take_along_axis(targets, ahead, axis=1)
      future_weights = jnp.take_along_axis(weights, ahead, axis=1) * (targets > 0)
      future_times = at(lambda t: jnp.take_along_axis(t, ahead, axis=1))
      total = total + cfg.future_weight * weighted_mean(nll(hidden, 0, future, future_times),
                                                        future_weights)
    has_target = (targets > 0).astype(hidden.dtype)
    if cfg.genre_weight and "genres" in self.metadata:
      genres = jnp.asarray(self.metadata["genres"])[targets]
      total = total + cfg.genre_weight * weighted_mean(
          genre_nll(model.genre_logits(hidden), genres), has_target)
    if cfg.event_type_weight:
      total = total + cfg.event_type_weight * weighted_mean(
          event_nll(model.event_logits(hidden), batch["target_event"]), has_target)
    return total

  def personal_items(self, model):
    """Every item's vector [V, D]; items unseen in training from their metadata alone."""
    return model.item_vectors(self._metadata(), jnp.asarray(self.trained))

  def summary(self, batch, vectors_of, training: bool) -> jax.Array | None:
    """With model.history_summary, [B, D]: the mean vector (vectors_of(ids) -> [..., D]) of the
    items watched before the window. A training batch's `seen` holds exactly those; an
    evaluation or serving batch's holds the whole history in time order, the window last."""
    if not self.history_summary:
      return None
    seen = batch["seen"]
    before = seen > 0
    if not training:
      older = before.sum(1) - (batch["inputs"] > 0).sum(1)
      before = jnp.arange(seen.shape[1])[None, :] < older[:, None]
    weights = before.astype(jnp.float32)
    total = jnp.einsum("bs,bsd->bd", weights, vectors_of(seen))
    return total / jnp.maximum(weights.sum(1), 1.0)[:, None]

  def personal_query(self, model, batch, items=None):
    """The state after each row's last token [B, D]: the query for its next item."""
    items = self.personal_items(model) if items is None else items
    summary = self.summary(batch, lambda ids: items[ids], training=False)
    return model(batch["inputs"], self._fields(batch), items, summary=summary)[:, -1]
