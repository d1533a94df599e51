"""Release-year buckets that no trained item carries, mapped to the nearest trained one.

A year only new items carry (the items released after the training period: every one newer than
anything seen) has an embedding row that no gradient ever reaches: it stays at its random init, so
it adds the same noise to every new item's metadata vector. Mapping it to the nearest year a
trained item has (newer than all of them -> the newest trained year) gives new items a trained row
that says "recent". Computed once from the training data, so evaluation sees no held-out counts.
"""

from __future__ import annotations

import numpy as np

from jaxrec.data.vocab import FIRST_ID, Vocabulary


def _year_values(vocab: Vocabulary) -> np.ndarray:
  """The numeric year of every id (NaN for padding, OOV and raw values that are not numbers)."""
  values = np.full(len(vocab), np.nan)
  for offset, raw in enumerate(vocab.raw_ids):
    try:
      values[FIRST_ID + offset] = float(raw)
    except (TypeError, ValueError):
      pass
  return values


def clamp_unseen_years(year_ids: np.ndarray, trained: np.ndarray, vocab: Vocabulary
                       ) -> np.ndarray:
  """year_ids [items] with each numeric year no trained item has replaced by the id of the
  numerically nearest year a trained item has (ties: the later year). Trained years, padding,
  OOV and non-numeric values are unchanged; with no trained numeric year nothing changes."""
  year_ids = np.asarray(year_ids)
  values = _year_values(vocab)
  trained_ids = np.unique(year_ids[np.asarray(trained, bool)])
  trained_ids = trained_ids[~np.isnan(values[trained_ids])]
  if len(trained_ids) == 0:
    return year_ids
  trained_years = values[trained_ids]
  table = np.arange(len(vocab), dtype=year_ids.dtype)
  for year_id in np.flatnonzero(~np.isnan(values)):
    if year_id in trained_ids:
      continue
    distance = np.abs(trained_years - values[year_id])
    # Among equally near trained years prefer the later one: new items are recent.
    best = np.lexsort((-trained_years, distance))[0]
    table[year_id] = trained_ids[best]
  return table[year_ids]
