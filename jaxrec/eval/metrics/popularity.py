"""Most-popular-items baseline, ranked through the same evaluation batches and metric code as the
trained models, so its numbers sit beside theirs under one protocol."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.eval.metrics import ranking


def evaluate_popularity(task, split: str, ks=ranking.KS, row_weight=None, counts=None) -> dict:
  """Ranks by `counts` per item id (default: training-token counts), under the task's protocol
  (its eval.exclude_seen; users with and without history apart where the task reports them)."""
  counts = task.data.item_counts if counts is None else counts
  scores = jnp.log1p(jnp.asarray(counts, jnp.float32))
  exclude_seen = getattr(task, "exclude_seen", True)

  # scores is an argument, not a closure: with nothing excluded the tiled scores would be a
  # compile-time constant, and XLA constant-folds the top_k sort over it (minutes per shape).
  @jax.jit
  def step(scores, batch):
    tiled = jnp.broadcast_to(scores, (batch["inputs"].shape[0], scores.shape[0]))
    out = ranking.topk_metrics(ranking.mask_scores(tiled, batch["seen"] if exclude_seen else None),
                               batch["targets"], ks)
    out[ranking.HAS_HISTORY] = ranking.has_history(batch["inputs"])
    return out

  accumulator = ranking.MetricAccumulator(by_history=getattr(task, "by_history", False))
  for batch in task.eval_batches(split):
    weight = batch.pop("weight")
    if row_weight is not None:
      weight = weight * row_weight(batch)
    accumulator.add(jax.device_get(step(scores, {k: np.asarray(v) for k, v in batch.items()
                                         if k in ("inputs", "seen", "targets")})), weight)
  return accumulator.result()
