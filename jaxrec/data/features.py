"""Side tables (item metadata, user attributes) encoded as id arrays indexed by item or user id.

Categorical columns get a vocabulary each (0 padding, 1 unknown); multi-valued columns ('|'-separated
genres) and titles (split into lowercase words) become padded [rows, k] matrices. Numeric columns with
many distinct values (a release timestamp) are kept as numbers rather than given a vocabulary.
"""

from __future__ import annotations

import re

import numpy as np

from jaxrec.data.events import SideTable
from jaxrec.data.vocab import Vocabulary

MAX_VALUES = 8  # per multi-valued feature: enough for genres and the words of a title
NUMERIC_MIN_DISTINCT = 1000


def _split_values(values: np.ndarray, multi: bool, title: bool) -> list[list[str]]:
  if title:
    return [re.findall(r"[a-z0-9]+", str(v).lower())[:MAX_VALUES] for v in values]
  if multi:
    return [[x for x in str(v).split("|") if x][:MAX_VALUES] for v in values]
  return [[str(v)] if str(v) != "" else [] for v in values]


def _as_numeric(values: np.ndarray) -> np.ndarray | None:
  try:
    numbers = values.astype(np.float64)
  except ValueError:
    return None
  return numbers if len(np.unique(numbers)) >= NUMERIC_MIN_DISTINCT else None


def encode_side_table(table: SideTable, key_vocab: Vocabulary
                      ) -> tuple[dict[str, np.ndarray], dict[str, Vocabulary]]:
  """Returns (feature arrays indexed by key id, vocabulary per categorical feature)."""
  rows = key_vocab.lookup(table.ids) if len(table.ids) else np.zeros(0, np.int32)
  known = rows >= 2
  arrays, vocabs = {}, {}
  for name, column in table.columns.items():
    column = np.asarray(column)[known]
    numeric = None if name in table.multi_valued or name == "title" else _as_numeric(column)
    if numeric is not None:
      out = np.full(len(key_vocab), np.nan)
      out[rows[known]] = numeric
      arrays[name] = out
      continue
    title = name == "title"
    if title:  # kept verbatim too, for people reading recommendations
      text = np.full(len(key_vocab), "", dtype=column.dtype if len(column) else str)
      text[rows[known]] = column
      arrays["title"] = text
    lists = _split_values(column, name in table.multi_valued, title)
    feature = "title_words" if title else name
    flat = np.array([x for values in lists for x in values], dtype=str)
    vocab = Vocabulary.build(flat)
    width = MAX_VALUES if (title or name in table.multi_valued) else 1
    out = np.zeros((len(key_vocab), width), np.int32)
    lengths = np.array([len(v) for v in lists], np.int64)
    ids = vocab.lookup(flat)
    row_index = np.repeat(rows[known], lengths)
    col_index = np.arange(len(flat)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    out[row_index, col_index] = ids
    arrays[feature] = out if width > 1 else out[:, 0]
    vocabs[feature] = vocab
  return arrays, vocabs


def categorical(features: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  """The id columns of encoded features (int32: what an embedding table reads), without the
  numeric ones kept as numbers (a release timestamp)."""
  return {name: values for name, values in features.items() if values.dtype == np.int32}
