"""Cold-start evaluation: only the users whose held-out item had no training interactions.

Such an item's id embedding never trained, so a model can only place it from metadata (the
two-tower scores it from its metadata alone); a popularity ranking cannot place it at all.
"""

from __future__ import annotations

import jax
import numpy as np
from flax import nnx

from jaxrec.eval import metrics
from jaxrec.eval.popularity import evaluate_popularity


def cold_items(data) -> np.ndarray:
  """[V] 1.0 for items with no training tokens (padding and OOV excluded)."""
  cold = (data.item_counts == 0).astype(np.float32)
  cold[:2] = 0
  return cold


def counts_before(data, split: str) -> np.ndarray:
  """[V] tokens per item before `split`'s targets (for test: training and validation tokens):
  the popularity a live system knows when the split's period starts, new items' first days
  included."""
  from jaxrec.data.pipelines import _split_range
  lo, _ = _split_range(data, split)
  counts = np.zeros(data.num_items, np.int64)
  for record, tokens in enumerate(data.user_tokens(np.arange(data.num_users) + 2)):
    np.add.at(counts, tokens["item"][:lo[record]], 1)
  return counts


def cold_start_report(run, split: str = "test") -> dict:
  """Metrics of `run`'s model and of popularity on the users whose `split` item is cold.

  `popularity` ranks by training counts, as the issue's baseline does: a new item has none, so it
  never reaches a top K. `recent_popularity` also counts the tokens between the training cut-off
  and the split (the validation period, for test), where many new items were first seen: the
  baseline a metadata model has to beat to be worth its cost."""
  cold = cold_items(run.task.data)
  only_cold = lambda batch: cold[np.asarray(batch["targets"])[:, 0]]
  model = run.evaluate(split, row_weight=only_cold)
  popularity = evaluate_popularity(run.task, split, run.task.ks, row_weight=only_cold)
  recent = evaluate_popularity(run.task, split, run.task.ks, row_weight=only_cold,
                               counts=counts_before(run.task.data, split))
  return {"users": model.get("num_users", 0.0), "model": model, "popularity": popularity,
          "recent_popularity": recent,
          "cold_items": int(cold.sum()),
          "model_among_new_items": _among_cold_items(run, split, cold, only_cold)}


def _among_cold_items(run, split: str, cold: np.ndarray, only_cold) -> dict:
  """The same users' metrics when only the new items are ranked (as a freshness slot would):
  does the metadata alone say which new item a user wants? Random gives K / new items."""
  task = run.task
  model = nnx.merge(run.graphdef, run.state)
  items = jax.jit(task.item_vectors)(model)
  warm = jax.numpy.asarray(cold == 0)

  @jax.jit
  def step(batch):
    scores = task.query_vectors(model, batch) @ items.T
    scores = jax.numpy.where(warm[None, :], metrics._neg(scores.dtype), scores)
    return metrics.topk_metrics(metrics.mask_scores(scores, batch["seen"]), batch["targets"],
                                task.ks)

  accumulator = metrics.MetricAccumulator()
  for batch in task.eval_batches(split):
    weight = batch.pop("weight") * only_cold(batch)
    accumulator.add(jax.device_get(step(batch)), weight)
  return accumulator.result()
