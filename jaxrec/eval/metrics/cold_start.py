"""Cold-start evaluation: only the users whose held-out item had no training interactions.

Such an item's id embedding never trained, so a model can only place it from metadata (the
two-tower scores it from its metadata alone, the foundation model from the out-of-vocabulary row
plus its metadata); a popularity ranking by training counts cannot place it at all. The report
ranks the same users two ways: among every item (full ranking, the issue's protocol) and among
the new items only (what a freshness slot does), for the model and for references that can rank
a new item (metadata_baselines.py), beside random's expected recall.
"""

from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.data.features import categorical
from jaxrec.data.pipelines import _split_range
from jaxrec.eval.metrics import ranking
from jaxrec.eval.metrics.metadata_baselines import (genre_profile_scores, item_genre_weights,
                                                    metadata_popularity, ranks_with_random_ties,
                                                    tie_jitter)
from jaxrec.eval.metrics.popularity import evaluate_popularity


# Tokens after which an item counts half in the recent genre profile: about the window a
# sequential model reads (on synthetic-long, 50 to 200 tokens rank new items alike).
RECENT_HALF_LIFE = 100


def cold_items(data) -> np.ndarray:
  """[V] 1.0 for items with no training tokens (padding and OOV excluded)."""
  cold = (data.item_counts == 0).astype(np.float32)
  cold[:2] = 0
  return cold


def counts_before(data, split: str) -> np.ndarray:
  """[V] tokens per item before `split`'s targets (for test: training and validation tokens):
  the popularity a live system knows when the split's period starts, new items' first days
  included."""
  lo, _ = _split_range(data, split)
  counts = np.zeros(data.num_items, np.int64)
  for record, tokens in enumerate(data.user_tokens(np.arange(data.num_users) + 2)):
    np.add.at(counts, tokens["item"][:lo[record]], 1)
  return counts


def rank_scores(task, split: str, score: Callable, row_weight, among=None) -> dict:
  """Metrics of `score(batch) -> [B, V]` over `split`'s evaluation batches, each row weighted by
  `row_weight(batch)`; every earlier item of the user is excluded, and with `among` [V] (1 = may
  be ranked) so is every other item."""
  blocked = None if among is None else jnp.asarray(np.asarray(among) == 0)

  @jax.jit
  def step(batch):
    scores = score(batch)
    if blocked is not None:
      scores = jnp.where(blocked[None, :], ranking._neg(scores.dtype), scores)
    return ranking.topk_metrics(ranking.mask_scores(scores, batch["seen"]), batch["targets"],
                                task.ks)

  accumulator = ranking.MetricAccumulator()
  for batch in task.eval_batches(split):
    weight = np.asarray(batch.pop("weight")) * row_weight(batch)
    accumulator.add(jax.device_get(step(batch)), weight)
  return accumulator.result()


def metadata_baselines(task, split: str, row_weight, cold: np.ndarray) -> dict:
  """Metadata popularity and genre profile, ranked among all items and among the new ones."""
  data = task.data
  metadata = categorical(data.item_features)
  popularity = jnp.asarray(ranks_with_random_ties(
      metadata_popularity(data.item_counts, metadata)))
  genres = jnp.asarray(item_genre_weights(metadata, data.num_items), jnp.float32)
  jitter = jnp.asarray(tie_jitter(data.num_items))
  scorers = {
      "metadata_popularity": lambda batch: jnp.broadcast_to(
          popularity, (batch["seen"].shape[0], popularity.shape[0])),
      "genre_profile": lambda batch: genre_profile_scores(batch["seen"], genres, jitter),
      "recent_genre_profile": lambda batch: genre_profile_scores(
          batch["seen"], genres, jitter, half_life=RECENT_HALF_LIFE)}
  out = {}
  for name, score in scorers.items():
    out[name] = rank_scores(task, split, score, row_weight)
    out[f"{name}_among_new_items"] = rank_scores(task, split, score, row_weight, among=cold)
  return out


def new_target_spread(task, split: str, cold: np.ndarray, top: int = 5) -> dict:
  """How many distinct new items the cold-target users hold out, and the share of those users
  whose item is one of the `top` most held out: when a few popular new items account for most
  users, a Recall@K over users mostly says whether those few items made a top K."""
  targets = np.concatenate([np.asarray(batch["targets"])[np.asarray(batch["weight"]) > 0, 0]
                            for batch in task.eval_batches(split)])
  targets = targets[cold[targets] > 0]
  counts = np.sort(np.bincount(targets, minlength=len(cold)))[::-1]
  return {"users": int(len(targets)), "distinct_items": int((counts > 0).sum()),
          f"top{top}_items_share": float(counts[:top].sum() / max(len(targets), 1))}


def random_recall(ks, candidates: int) -> dict:
  """A random order's expected Recall@k with one held-out item among `candidates`."""
  return {f"recall@{k}": min(1.0, k / max(candidates, 1)) for k in ks}


def cold_targets(cold: np.ndarray):
  """A row weight keeping the evaluation rows whose held-out item is cold."""
  return lambda batch: cold[np.asarray(batch["targets"])[:, 0]]


def reference_report(task, split: str, cold: np.ndarray) -> dict:
  """The references that need no trained model, on the users whose `split` item is cold:
  metadata popularity and genre profile (all items and new items only), how concentrated the
  held-out new items are, and a random order's recall."""
  return {**metadata_baselines(task, split, cold_targets(cold), cold),
          "new_targets": new_target_spread(task, split, cold),
          "random": random_recall(task.ks, task.data.num_items - 2),
          "random_among_new_items": random_recall(task.ks, int(cold.sum()))}


def cold_start_report(run, split: str = "test") -> dict:
  """Metrics of `run`'s model and of the references on the users whose `split` item is cold.

  `popularity` ranks by training counts, as the issue's baseline does: a new item has none, so it
  never reaches a top K. `recent_popularity` also counts the tokens between the training cut-off
  and the split (the validation period, for test), where many new items were first seen.
  `metadata_popularity`, `genre_profile` and `recent_genre_profile` (metadata_baselines.py)
  place a new item from the same metadata the model reads: the references a metadata path has to
  beat."""
  task = run.task
  cold = cold_items(task.data)
  only_cold = cold_targets(cold)
  model = run.evaluate(split, row_weight=only_cold)
  popularity = evaluate_popularity(task, split, task.ks, row_weight=only_cold)
  recent = evaluate_popularity(task, split, task.ks, row_weight=only_cold,
                               counts=counts_before(task.data, split))
  return {"users": model.get("num_users", 0.0), "model": model, "popularity": popularity,
          "recent_popularity": recent,
          "cold_items": int(cold.sum()),
          "model_among_new_items": _model_among_new_items(run, split, cold, only_cold),
          **reference_report(task, split, cold)}


def _model_among_new_items(run, split: str, cold: np.ndarray, only_cold) -> dict:
  """The same users' metrics when the model ranks only the new items: does the metadata alone
  say which new item a user wants? Random gives K / new items."""
  task = run.task
  model = nnx.merge(run.graphdef, run.state)
  items = jax.jit(task.item_vectors)(model)
  score = lambda batch: task.query_vectors(model, batch) @ items.T
  return rank_scores(task, split, score, only_cold, among=cold)
