"""Cold-start evaluation: only the users whose held-out item had no training interactions.

Such an item's id embedding never trained, so a model can only place it from metadata (the
two-tower scores it from its metadata alone); a popularity ranking cannot place it at all.
"""

from __future__ import annotations

import numpy as np

from jaxrec.eval.popularity import evaluate_popularity


def cold_items(data) -> np.ndarray:
  """[V] 1.0 for items with no training tokens (padding and OOV excluded)."""
  cold = (data.item_counts == 0).astype(np.float32)
  cold[:2] = 0
  return cold


def cold_start_report(run, split: str = "test") -> dict:
  """Metrics of `run`'s model and of popularity on the users whose `split` item is cold."""
  cold = cold_items(run.task.data)
  only_cold = lambda batch: cold[np.asarray(batch["targets"])[:, 0]]
  model = run.evaluate(split, row_weight=only_cold)
  popularity = evaluate_popularity(run.task, split, run.task.ks, row_weight=only_cold)
  return {"users": model.get("num_users", 0.0), "model": model, "popularity": popularity,
          "cold_items": int(cold.sum())}
