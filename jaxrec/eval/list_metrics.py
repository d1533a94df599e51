"""Beyond-accuracy metrics of the lists an evaluation ranked: what `jaxrec eval` reports beside
accuracy.

The eval step of a task that ranks the whole catalogue returns, beside its per-user metrics,
each user's top LIST_K items (metrics.TOP_ITEMS, from the same masked scores and the same top_k,
so seen items are already excluded). A ListCollector gathers those lists with the batch's history
and held-out items; `list_report` turns them into beyond_accuracy.py's metrics:

  * coverage, exposure Gini: over the catalogue (ids 2..V-1), across all users' lists;
  * intra-list diversity: cosine distance on the model's item vectors, where it has them;
  * genre entropy, calibration KL: on the dataset's `genres` item feature (history = the user's
    items before the held-out one);
  * novelty: self-information of the training counts;
  * serendipity: share of list items that are held-out items and not in the popularity
    baseline's list for that user (the most popular training items the user has not seen).
"""

from __future__ import annotations

import numpy as np

from jaxrec.data.vocab import FIRST_ID
from jaxrec.eval import beyond_accuracy
from jaxrec.eval.metrics import LIST_K

GENRE_FEATURE = "genres"


class ListCollector:
  """Host-side gatherer of (top list, history, held-out items) rows with a positive weight."""

  def __init__(self):
    self._parts = {"lists": [], "seen": [], "targets": []}
    self.note = None

  def add(self, top_items, batch: dict, weight) -> None:
    top_items, weight = np.asarray(top_items), np.asarray(weight)
    if len(top_items) != len(batch["targets"]):
      # On a pod the outputs cover every process's rows but the batch only this one's.
      self.note = "lists are gathered in a single process only; run `jaxrec eval` on one host"
      return
    keep = weight > 0
    self._parts["lists"].append(top_items[keep])
    self._parts["seen"].append(np.asarray(batch["seen"])[keep])
    self._parts["targets"].append(np.asarray(batch["targets"])[keep])

  def __len__(self):
    return sum(len(x) for x in self._parts["lists"])

  def arrays(self) -> dict[str, np.ndarray]:
    """lists [U, k], seen [U, H], targets [U, T], each padded with 0 to its widest batch."""
    return {name: _stack(parts) for name, parts in self._parts.items()}


def _stack(parts: list[np.ndarray]) -> np.ndarray:
  if not parts:
    return np.zeros((0, 1), np.int64)
  width = max(p.shape[1] for p in parts)
  return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]))) for p in parts])


def popularity_lists(counts: np.ndarray, seen: np.ndarray, k: int = LIST_K) -> np.ndarray:
  """[U, k] each user's most popular catalogue items outside `seen` (the popularity baseline,
  ties to the lower id as in metrics.topk_metrics). Only the k + H most popular are looked at,
  which always leaves k unseen ones, so this is O(U (k + H)) and not O(U V)."""
  order = np.argsort(-np.asarray(counts[FIRST_ID:]), kind="stable") + FIRST_ID
  head = order[:k + seen.shape[1]]
  unseen = ~(head[None, :, None] == seen[:, None, :]).any(axis=2)         # [U, k + H]
  # A stable sort of "seen" to the back keeps the popularity order among the unseen.
  first = np.argsort(~unseen, axis=1, kind="stable")[:, :k]
  return np.where(np.take_along_axis(unseen, first, 1), head[first], 0)


def list_report(collector: ListCollector, ds, item_vectors=None) -> dict:
  """The beyond-accuracy metrics of the collected lists, with `notes` on what was left out."""
  if not len(collector):
    return {"notes": [collector.note or "this evaluation ranked no catalogue lists (ranking "
                      "workdirs score each user's impressions, not the catalogue)"]}
  a = collector.arrays()
  counts = np.asarray(ds.item_counts)
  notes = [collector.note] if collector.note else []
  genres = ds.item_features.get(GENRE_FEATURE)
  if genres is None or not np.any(genres):
    notes.append(f"genre entropy and calibration: the dataset has no {GENRE_FEATURE!r} item "
                 "feature")
    genres = None
  if item_vectors is None:
    notes.append("intra-list diversity: the model has no item vectors")
  out = {"list_length": int(a["lists"].shape[1]), "users": int(len(a["lists"]))}
  out.update(beyond_accuracy.beyond_accuracy(
      a["lists"], ds.num_items, item_vectors=item_vectors, item_genres=genres,
      item_popularity=counts, relevant=list(a["targets"]),
      expected=list(popularity_lists(counts, a["seen"], a["lists"].shape[1])),
      histories=a["seen"]))
  out["notes"] = notes
  return out


DESCRIPTIONS = {
    "coverage": "share of catalogue items in any list",
    "exposure_gini": "inequality of item exposure (0 equal, 1 one item)",
    "intra_list_diversity": "mean pairwise cosine distance in a list",
    "genre_entropy": "genre entropy of a list (nats)",
    "calibration_kl": "KL(history genres || list genres) (nats)",
    "novelty": "mean self-information of list items (bits)",
    "serendipity": "share of list items held out and not in the popularity list",
}


def format_report(report: dict) -> str:
  if "users" not in report:
    return "beyond accuracy: " + "; ".join(report["notes"])
  lines = [f"beyond accuracy, top-{report['list_length']} lists of {report['users']} users:"]
  for key, text in DESCRIPTIONS.items():
    if key in report:
      lines.append(f"  {key:<22}{report[key]:>8.4f}  {text}")
  lines += [f"  not reported: {note}" for note in report["notes"]]
  return "\n".join(lines)
