"""The task for multi-task ranking: a DLRM scoring impressions, one head per outcome.

Each head names its label (pipelines.ranking_labels, plus `complete`: a watch of at least 90%),
its kind and its loss weight:
  binary             BCE on the logit; predicts a probability.
  regression         squared error on log1p(label); predicts expm1(output).
  weighted_logistic  YouTube's watch-time logistic regression (Covington et al. 2016): positives
                     weighted by their label, negatives by 1; predicts exp(logit), the label's odds
                     estimate.
The combined ranking score is the policy-weighted sum of the heads' predictions
(`config.policy`, e.g. 3·watch + 2·complete + 1.5·share + 0.5·follow − 5·report − 1·skip).

Evaluation, on the held-out impressions of a split: per head AUC, logloss and calibration (mean
prediction / mean label), RMSE for regressions, and NDCG@10 of the combined score within each
user's impressions, the realised policy value of each impression being its gain.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxrec.data import pipelines
from jaxrec.data.prepare import open_or_prepare
from jaxrec.data.tokenize import NUM_GAP_BUCKETS, NUM_HOURS, NUM_WEEKDAYS
from jaxrec.errors import UserError
from jaxrec.eval.metrics.heads import RankingAccumulator
from jaxrec.models.dlrm import DLRM, DLRMSpec
from jaxrec.models.row_optimizers import KINDS, RowOptimizer
from jaxrec.train import user_features
from jaxrec.train.task import Task

HEAD_KINDS = ("binary", "regression", "weighted_logistic")
LABELS = (*pipelines.LABELS, "complete")
# Ids that come from the clock rather than a vocabulary: hour 1..24, weekday 1..7, gap buckets.
FIXED_SIZES = {"hour": NUM_HOURS, "weekday": NUM_WEEKDAYS, "gap": NUM_GAP_BUCKETS}
COMPLETE_FRACTION = 0.9


def head_loss(kind: str, output: jax.Array, label: jax.Array) -> jax.Array:
  """Per-row loss of one head."""
  if kind == "binary":
    return optax.sigmoid_binary_cross_entropy(output, label)
  if kind == "regression":
    return jnp.square(output - jnp.log1p(label))
  positive = label > 0
  return -(jnp.where(positive, label, 0.0) * jax.nn.log_sigmoid(output)
           + jnp.where(positive, 0.0, 1.0) * jax.nn.log_sigmoid(-output))


def head_prediction(kind: str, output: jax.Array) -> jax.Array:
  """A head's prediction on its label's scale."""
  if kind == "binary":
    return jax.nn.sigmoid(output)
  return jnp.expm1(output) if kind == "regression" else jnp.exp(output)


def labels_of(batch: dict) -> dict:
  labels = dict(batch["labels"])
  labels["complete"] = (labels["watch"] >= COMPLETE_FRACTION).astype(jnp.float32)
  return labels


class RankingTask(Task):
  def __init__(self, config):
    self.config = config
    self.heads = {name: dict(head) for name, head in config.heads.items()}
    self._check_heads(config)
    self.data = open_or_prepare(config.data)
    emb = config.embedding
    if emb.sparse:
      if emb.optimizer not in KINDS:
        raise UserError(f"embedding.optimizer must be one of {', '.join(KINDS)}, got "
                        f"{emb.optimizer!r}.")
      self.row_optimizer = RowOptimizer(emb.optimizer, emb.learning_rate,
                                        emb.initial_accumulator)
    self.user_encoder_dir = config.model.get("user_embedding_from", "")
    self.user_encoder_config = None
    if self.user_encoder_dir:
      self.user_encoder_config = user_features.source_config(self.user_encoder_dir)
      if not user_features.is_export(self.user_encoder_dir):  # an export was checked when written
        user_features.check_same_data(self.user_encoder_config, self.user_encoder_dir, self.data)
    self._history_vectors = None
    self.spec = self._spec()

  def _check_heads(self, config):
    if not self.heads:
      raise UserError("config.heads is empty: name at least one head, e.g. "
                      "--config.heads.click.label=click.")
    for name, head in self.heads.items():
      if head.get("label") not in LABELS:
        raise UserError(f"heads.{name}.label is {head.get('label')!r}: use one of "
                        f"{', '.join(LABELS)}.")
      if head.get("kind") not in HEAD_KINDS:
        raise UserError(f"heads.{name}.kind is {head.get('kind')!r}: use one of "
                        f"{', '.join(HEAD_KINDS)}.")
    unknown = set(config.policy) - set(self.heads)
    if unknown:
      raise UserError(f"policy weights name {sorted(unknown)}, which are not heads "
                      f"({', '.join(self.heads)}): weight the heads only.")

  def _options(self, split: str, seed: int = 0) -> pipelines.PipelineOptions:
    train = split == "train"
    batch = self.config.train.batch_size if train else self.config.eval.batch_size
    return pipelines.PipelineOptions(batch_size=pipelines.process_batch_size(batch), seed=seed,
                                     num_epochs=None if train else 1)

  def _dataset(self, split: str, seed: int = 0, with_user_vectors: bool = True):
    return pipelines.ranking_dataset(
        self.data, split, options=self._options(split, seed),
        negatives_per_positive=self.config.data.negatives_per_positive,
        user_vectors=self.history_vectors() if with_user_vectors else None)

  def history_vectors(self) -> user_features.HistoryVectors | None:
    """The user-embedding feature's table (model.user_embedding_from), computed on first use."""
    if self.user_encoder_dir and self._history_vectors is None:
      self._history_vectors = user_features.history_vectors(self.user_encoder_dir, self.data)
    return self._history_vectors

  def _spec(self) -> DLRMSpec:
    example = next(iter(self._dataset("valid", with_user_vectors=False)))
    dropped = set(filter(None, self.config.model.exclude_features.split(",")))
    unknown = dropped - set(example["sparse"]) - set(example["multi_hot"])
    if unknown:
      raise UserError(f"model.exclude_features names {sorted(unknown)}, which this dataset does "
                      f"not have; its features are {sorted({**example['sparse'], **example['multi_hot']})}.")
    sizes = lambda names: {n: FIXED_SIZES.get(n) or len(self.data.vocabs[n])
                           for n in sorted(names) if n not in dropped}
    model = self.config.model
    return DLRMSpec(single_hot=sizes(example["sparse"]), multi_hot=sizes(example["multi_hot"]),
                    num_dense=example["dense"].shape[1], heads=tuple(self.heads), dim=model.dim,
                    bottom=tuple(model.bottom), top=tuple(model.top),
                    interaction=model.interaction, cross_layers=model.cross_layers,
                    wide=model.wide, deep=model.deep, pooling=model.pooling,
                    dropout=model.dropout, stack_below=model.stack_tables_below,
                    user_embedding_dim=int(self.user_encoder_config.model.dim)
                    if self.user_encoder_config else 0)

  def build_model(self, rngs):
    return DLRM(self.spec, rngs=rngs, row_optimizer=self.row_optimizer)

  def train_data(self, seed: int):
    return self._dataset("train", seed)

  def loss(self, model, batch, key, rows=None):
    outputs = model(batch, rows, rngs=nnx.Rngs(dropout=key))
    labels = labels_of(batch)
    total = 0.0
    for i, (name, head) in enumerate(self.heads.items()):
      total += head.get("weight", 1.0) * jnp.mean(
          head_loss(head["kind"], outputs[:, i], labels[head["label"]]))
    return total

  def eval_batches(self, split: str):
    return self._dataset(split)

  def predictions(self, model, batch) -> jax.Array:
    """Each head's prediction on its label's scale [B, heads] (what serving scores with)."""
    outputs = model(batch)
    return jnp.stack([head_prediction(head["kind"], outputs[:, i])
                      for i, head in enumerate(self.heads.values())], -1)

  def eval_step(self, model, batch, shared):
    predictions = self.predictions(model, batch)
    labels = labels_of(batch)
    result = {"group": batch["sparse"]["user"]}  # NDCG within each user's impressions
    for i, (name, head) in enumerate(self.heads.items()):
      result[f"prediction/{name}"] = predictions[:, i]
      result[f"label/{name}"] = labels[head["label"]]
    return result

  def metric_accumulator(self):
    return _RankingMetrics(self)

  def protocol(self, split: str) -> dict:
    negatives = self.config.data.negatives_per_positive
    shown = (f"each with {negatives} sampled unseen items as non-engaged impressions"
             if negatives else "as logged")
    return {"protocol": f"held-out impressions of the {split} split, {shown}; NDCG@10 of the "
                        "combined policy score within each user's impressions",
            "policy": dict(self.config.policy)}


class _RankingMetrics:
  """Adapts RankingAccumulator to the trainer's add(outputs, weight) / result() protocol."""

  def __init__(self, task: RankingTask):
    self.task = task
    self.accumulator = RankingAccumulator()

  def add(self, outputs: dict, weight: np.ndarray) -> None:
    heads = self.task.heads
    self.accumulator.add({h: outputs[f"label/{h}"] for h in heads},
                         {h: outputs[f"prediction/{h}"] for h in heads},
                         weights=weight, groups=outputs["group"])

  def result(self) -> dict:
    kinds = {h: "binary" if head["kind"] == "binary" else "regression"
             for h, head in self.task.heads.items()}
    return self.accumulator.result(kinds, ndcg_k=10, combined=dict(self.task.config.policy))
