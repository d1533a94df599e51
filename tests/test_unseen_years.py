"""A release year no trained item carries is mapped to the nearest trained year, so new items'
metadata vectors use a trained row instead of a never-updated random one."""

import os

import numpy as np

from jaxrec.config import apply_overrides, load_config
from jaxrec.data.vocab import Vocabulary
from jaxrec.train.trainer import build_task
from jaxrec.train.unseen_years import clamp_unseen_years

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _years(trained_years, new_years):
  """Ids [padding, OOV, items...] of trained then untrained items, their vocabulary, the mask."""
  raw = np.array(trained_years + new_years)
  vocab = Vocabulary.build(raw)
  ids = np.concatenate([[0, 1], vocab.lookup(raw)]).astype(np.int32)
  trained = np.array([False, False] + [True] * len(trained_years) + [False] * len(new_years))
  return ids, trained, vocab


def test_a_year_newer_than_every_trained_one_becomes_the_newest_trained_year():
  ids, trained, vocab = _years(["1995", "2001", "2001", "1998"], ["2024", "2025", "2001"])
  out = clamp_unseen_years(ids, trained, vocab)
  assert list(vocab.raw(out[2:])) == ["1995", "2001", "2001", "1998", "2001", "2001", "2001"]
  np.testing.assert_array_equal(out[:2], [0, 1])  # padding and OOV untouched
  assert out.dtype == ids.dtype


def test_an_unseen_year_between_or_before_trained_ones_takes_the_nearest():
  ids, trained, vocab = _years(["1990", "2000"], ["1993", "1997", "1995", "1950"])
  out = clamp_unseen_years(ids, trained, vocab)
  # 1995 is as near to 1990 as to 2000: the later one (new items are recent).
  assert list(vocab.raw(out[4:])) == ["1990", "2000", "2000", "1990"]


def test_trained_years_and_non_numeric_values_are_unchanged():
  ids, trained, vocab = _years(["1990", "unknown"], ["1990", "n/a"])
  out = clamp_unseen_years(ids, trained, vocab)
  np.testing.assert_array_equal(out, ids)


def test_movielens_metadata_is_unchanged_where_every_year_is_trained(ml100k):
  config = apply_overrides(
      load_config(os.path.join(ROOT, "configs", "movielens_foundation.py:smoke")),
      [f"data.dir={ml100k.path}"])
  task = build_task(config)
  raw = ml100k.item_features["year"]
  numeric = np.array([False] * 2 + [  # padding, OOV: no year
      v.replace(".", "", 1).isdigit() for v in ml100k.vocabs["item_year"].raw_ids])
  trained_years = set(raw[task.trained & numeric[raw]])
  # ML-100K's few untrained items (1996-1998 films) share their years with trained ones.
  assert set(raw[numeric[raw]]) <= trained_years
  np.testing.assert_array_equal(task.metadata["year"], raw)
