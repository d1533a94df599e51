"""Beyond-accuracy metrics of the lists an evaluation ranked: what `jaxrec eval` reports beside
accuracy.

The eval step of a task that ranks the whole catalogue returns, beside its per-user metrics,
each user's top LIST_K items (ranking.TOP_ITEMS, from the same masked scores and the same top_k,
so seen items are already excluded). A ListCollector gathers those lists with what it needs from
the batch (held-out items, history); `list_report` turns them into beyond_accuracy.py's metrics:

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
from jaxrec.eval.metrics import beyond_accuracy as ba
from jaxrec.eval.metrics.ranking import LIST_K

GENRE_FEATURE = "genres"
# Users per slice when the per-list metrics are computed: their intermediate arrays are
# [users, k, dim] (ILD) or [users, k, genres], too big at once for millions of users.
CHUNK = 16384


class ListCollector:
  """Host-side gatherer of each evaluated user's top list, with what the per-list metrics need
  from the batch, reduced as it arrives: the held-out items, the popularity baseline's list and
  the history's genre distribution (histories themselves can be thousands of items long)."""

  def __init__(self, ds):
    self._ds = ds
    self.counts = self.genres = None
    self._parts = {name: [] for name in ("lists", "targets", "expected", "history_genres",
                                         "has_history")}
    self.note = None

  def _read_dataset(self) -> None:
    # On the first list only: a ranking task's evaluation never gives one.
    self.counts = np.asarray(self._ds.item_counts)
    self._order = popularity_order(self.counts)
    genres = self._ds.item_features.get(GENRE_FEATURE)
    self.genres = genres if genres is not None and np.any(genres) else None
    self._weights = None if self.genres is None else ba.genre_weights(self.genres)

  def add(self, top_items, batch: dict, weight) -> None:
    if self.counts is None:
      self._read_dataset()
    top_items, weight = np.asarray(top_items), np.asarray(weight)
    if len(top_items) != len(batch["targets"]):
      # On a pod the outputs cover every process's rows but the batch only this one's.
      self.note = "lists are gathered in a single process only; run `jaxrec eval` on one host"
      return
    keep = weight > 0
    lists, seen = top_items[keep], np.asarray(batch["seen"])[keep]
    self._parts["lists"].append(lists)
    self._parts["targets"].append(np.asarray(batch["targets"])[keep])
    self._parts["expected"].append(popularity_lists(self._order, seen, lists.shape[1]))
    if self._weights is not None:
      p, has_history = ba.genre_distribution(seen, self._weights)
      self._parts["history_genres"].append(p)
      self._parts["has_history"].append(has_history)

  def __len__(self):
    return sum(len(x) for x in self._parts["lists"])

  def arrays(self) -> dict[str, np.ndarray]:
    """Each part stacked over batches (id arrays padded with 0 to the widest batch)."""
    return {name: _stack(parts) for name, parts in self._parts.items() if parts}


def _stack(parts: list[np.ndarray]) -> np.ndarray:
  if parts[0].ndim == 1:
    return np.concatenate(parts)
  width = max(p.shape[1] for p in parts)
  return np.concatenate([np.pad(p, ((0, 0), (0, width - p.shape[1]))) for p in parts])


def popularity_order(counts: np.ndarray) -> np.ndarray:
  """Catalogue ids, most popular first; ties to the lower id, as in ranking.topk_metrics."""
  return np.argsort(-np.asarray(counts[FIRST_ID:]), kind="stable") + FIRST_ID


def popularity_lists(order: np.ndarray, seen: np.ndarray, k: int = LIST_K) -> np.ndarray:
  """[U, k] each user's most popular catalogue items outside `seen` (the popularity baseline;
  `order` from popularity_order). Only the k + H most popular are looked at, which always
  leaves k unseen ones, so this is O(U (k + H)) and not O(U V)."""
  head = order[:k + seen.shape[1]]
  # Membership by binary search in each row's sorted history, as (row, id) keys that are sorted
  # overall once each row is: O(U (k + H) log) time and O(U (k + H)) memory, where comparing
  # every pair would take U (k + H) H (gigabytes for histories thousands long).
  rows = np.arange(len(seen), dtype=np.int64)[:, None]
  span = int(max(order.max(initial=0), seen.max(initial=0))) + 1
  history = (np.sort(seen, axis=1) + rows * span).ravel()
  query = head[None, :] + rows * span
  at = np.minimum(np.searchsorted(history, query), len(history) - 1)
  unseen = history[at] != query                                          # [U, k + H]
  # A stable sort of "seen" to the back keeps the popularity order among the unseen.
  first = np.argsort(~unseen, axis=1, kind="stable")[:, :k]
  return np.where(np.take_along_axis(unseen, first, 1), head[first], 0)


def list_report(collector: ListCollector, item_vectors=None) -> dict:
  """The beyond-accuracy metrics of the collected lists, with `notes` on what was left out."""
  if not len(collector):
    return {"notes": [collector.note or "this evaluation ranked no catalogue lists (ranking "
                      "workdirs score each user's impressions, not the catalogue)"]}
  a = collector.arrays()
  lists, counts, genres = a["lists"], collector.counts, collector.genres
  notes = [collector.note] if collector.note else []
  out = {"list_length": int(lists.shape[1]), "users": int(len(lists)),
         "coverage": ba.coverage(lists, len(counts)),
         "exposure_gini": ba.exposure_gini(lists, len(counts))}
  per_list = {}
  if item_vectors is not None:
    per_list["intra_list_diversity"] = lambda s: ba.intra_list_diversity_per_list(
        lists[s], item_vectors)
  else:
    notes.append("intra-list diversity: the model has no item vectors")
  if genres is not None:
    per_list["genre_entropy"] = lambda s: ba.genre_entropy_per_list(lists[s], genres)
    per_list["calibration_kl"] = lambda s: ba.calibration_kl_per_list(
        lists[s], None, genres, history_distribution=(a["history_genres"][s],
                                                      a["has_history"][s]))
  else:
    notes.append(f"genre entropy and calibration: the dataset has no {GENRE_FEATURE!r} item "
                 "feature")
  per_list["novelty"] = lambda s: ba.novelty_per_list(lists[s], counts)
  per_list["serendipity"] = lambda s: ba.serendipity_per_list(lists[s], a["targets"][s],
                                                              a["expected"][s])
  slices = [slice(i, i + CHUNK) for i in range(0, len(lists), CHUNK)]
  for name, metric in per_list.items():
    values, defined = (np.concatenate(x) for x in zip(*(metric(s) for s in slices)))
    out[name] = float(values[defined].mean()) if defined.any() else float("nan")
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
