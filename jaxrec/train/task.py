"""What a model brings to the one training loop.

The trainer owns the mesh, jit, optimizer, checkpoints, metrics and evaluation loop; a task owns
its data, its model and what "loss" and "evaluate one batch" mean for it.
"""

from __future__ import annotations

import abc
from typing import Iterable

import jax
from flax import nnx

from jaxrec.eval.metrics.ranking import MetricAccumulator
from jaxrec.models.row_optimizers import RowOptimizer


class Task(abc.ABC):
  # Set by tasks whose models have sparsely updated embedding tables (models/embedding.py).
  row_optimizer: RowOptimizer | None = None

  @abc.abstractmethod
  def build_model(self, rngs: nnx.Rngs) -> nnx.Module:
    """The Flax NNX model, built fresh (the partitioner calls it under eval_shape and jit)."""

  @abc.abstractmethod
  def train_data(self, seed: int) -> Iterable[dict]:
    """An endless, checkpointable iterator source (a Grain IterDataset) of host batches."""

  @abc.abstractmethod
  def loss(self, model: nnx.Module, batch: dict, key: jax.Array) -> jax.Array:
    """Scalar training loss; `key` seeds dropout and negative sampling for this step."""

  @abc.abstractmethod
  def eval_batches(self, split: str) -> Iterable[dict]:
    """Host batches of a split, each with a `weight` [B] (0 for padding rows)."""

  def eval_shared(self, model: nnx.Module):
    """What every batch of one evaluation shares, computed once per evaluation and passed to
    eval_step (e.g. every item's vector). A pytree of arrays, or None."""
    return None

  @abc.abstractmethod
  def eval_step(self, model: nnx.Module, batch: dict, shared) -> dict[str, jax.Array]:
    """Per-row metrics [B] for one batch (jitted by the trainer); `shared` from eval_shared."""

  def metric_accumulator(self):
    """Collects eval_step outputs over a split: `add(outputs, weight)`, `result()`. The default
    averages per-row metrics; a task whose metrics are not per-row means (AUC) brings its own."""
    return MetricAccumulator()

  @abc.abstractmethod
  def protocol(self, split: str) -> dict:
    """A description of how the metrics were computed, reported beside them."""

  # Retrieval models also say how they embed: a user's score for an item is the inner product of
  # these two, which is what an exported ScaNN index searches.
  def item_vectors(self, model: nnx.Module) -> jax.Array:
    """Every item's vector [V, D] (rows 0 and 1 are padding and out-of-vocabulary)."""
    raise NotImplementedError(f"{type(self).__name__} does not embed items")

  def query_vectors(self, model: nnx.Module, batch: dict) -> jax.Array:
    """The query vector [B, D] of each row of an eval batch."""
    raise NotImplementedError(f"{type(self).__name__} does not embed queries")
