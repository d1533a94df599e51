import math

import numpy as np
import pytest

from jaxrec.eval.metrics import beyond_accuracy as ba

# Ids 0 (padding) and 1 (OOV) are not catalogue items; 10 ids leave 8 real items (2..9).
LISTS = np.array([[2, 3, 4], [4, 5, 0]])


def test_coverage_counts_distinct_catalogue_items():
  assert ba.coverage(LISTS, 10) == pytest.approx(4 / 8)
  # OOV and ids past the catalogue are not items; -1 padding works like 0.
  assert ba.coverage(np.array([[1, 2, 7, -1]]), 4, pad=-1) == pytest.approx(1 / 2)
  assert ba.coverage(np.array([[0, 1, 2, -1]]), 3, pad=-1, first_id=0) == pytest.approx(1.0)


def test_exposure_gini():
  assert ba.exposure_gini(np.array([[2, 3], [4, 5]]), 6) == pytest.approx(0.0)
  # One of 4 items takes every impression: (n - 1) / n.
  assert ba.exposure_gini(np.array([[2, 0], [2, 2]]), 6) == pytest.approx(0.75)
  # Counts sorted (0, 1, 1, 2), n=4, total 4: sum((2i - 5) c_i) / (4 * 4) = (-1 + 1 + 6) / 16.
  assert ba.exposure_gini(np.array([[2, 3], [4, 4]]), 6) == pytest.approx(6 / 16)


def test_intra_list_diversity():
  vectors = np.array([[0, 0], [0, 0], [1, 0], [0, 2], [3, 0]], float)
  assert ba.intra_list_diversity(np.array([[2, 3]]), vectors) == pytest.approx(1.0)
  assert ba.intra_list_diversity(np.array([[2, 4]]), vectors) == pytest.approx(0.0)
  # Pairs (2,3)=1, (2,4)=0, (3,4)=1 -> 2/3; a one-item list is left out of the mean.
  lists = np.array([[2, 3, 4], [2, 0, 0]])
  assert ba.intra_list_diversity(lists, vectors) == pytest.approx(2 / 3)
  assert ba.intra_list_diversity(np.array([[2, 3, -1]]), vectors, pad=-1) == pytest.approx(1.0)
  assert math.isnan(ba.intra_list_diversity(np.array([[2, 0]]), vectors))


# Genre ids per item (0 = padding): item 2 -> {2}, 3 -> {3}, 4 -> {2, 3}, 5 -> {2}.
GENRES = np.array([[0, 0], [0, 0], [2, 0], [3, 0], [2, 3], [2, 2]])


def test_genre_entropy():
  assert ba.genre_entropy(np.array([[2, 5]]), GENRES) == pytest.approx(0.0)
  assert ba.genre_entropy(np.array([[2, 3]]), GENRES) == pytest.approx(math.log(2))
  assert ba.genre_entropy(np.array([[4, 0]]), GENRES) == pytest.approx(math.log(2))
  # Item 4 splits its weight: genre 2 gets 1.5 of 2, genre 3 gets 0.5.
  p = np.array([0.75, 0.25])
  both = np.array([[2, 4], [2, 5]])
  assert ba.genre_entropy(both, GENRES) == pytest.approx(-(p * np.log(p)).sum() / 2)


def test_novelty_uses_add_one_smoothing():
  counts = np.array([0, 0, 6, 2, 0])     # total 8, V 5 -> p = (c + 1) / 13
  bits = -np.log2((counts + 1) / 13)
  lists = np.array([[2, 3], [4, 0]])
  expected = ((bits[2] + bits[3]) / 2 + bits[4]) / 2
  assert ba.novelty(lists, counts) == pytest.approx(expected)


def test_serendipity_masks_and_sets_agree():
  lists = np.array([[2, 3, 4, 5], [2, 3, 0, 0]])
  relevant = [{2, 3, 4}, {3}]
  expected = [{2}, {3}]
  # User 0: 3 and 4 are relevant and unexpected (2/4); user 1: 3 is expected (0/2).
  assert ba.serendipity(lists, relevant, expected) == pytest.approx(0.25)
  rel_mask, exp_mask = np.zeros((2, 6), bool), np.zeros((2, 6), bool)
  for u in range(2):
    rel_mask[u, list(relevant[u])] = True
    exp_mask[u, list(expected[u])] = True
  assert ba.serendipity(lists, rel_mask, exp_mask) == pytest.approx(0.25)
  # Padded id arrays (0 and -1 are padding), for catalogues too large for masks.
  assert ba.serendipity(lists, np.array([[2, 3, 4], [3, 0, -1]]),
                        np.array([[2, 0], [3, 0]])) == pytest.approx(0.25)


def test_calibration_kl():
  history = np.array([[2, 3, 0]])        # genres 2, 3 half each
  assert ba.calibration_kl(np.array([[4, 0]]), history, GENRES, alpha=1e-9) == pytest.approx(0.0)
  assert ba.calibration_kl(np.array([[3, 2]]), history, GENRES) == pytest.approx(0.0)
  # List all genre 2: q~ = (0.99 + 0.005, 0.005).
  alpha = 0.01
  q = np.array([1 - alpha + alpha / 2, alpha / 2])
  want = (0.5 * np.log(0.5 / q)).sum()
  got = ba.calibration_kl(np.array([[2, 5]]), history, GENRES, alpha=alpha)
  assert got == pytest.approx(want) and got > 0
  # A user with an empty history is left out of the mean.
  two = ba.calibration_kl(np.array([[2, 5], [2, 5]]), np.array([[2, 3, 0], [0, 0, 0]]), GENRES)
  assert two == pytest.approx(want)


def test_padding_changes_nothing():
  base = np.array([[2, 3], [4, 5]])
  padded = np.array([[2, 3, -1], [-1, 4, 5]])
  vectors = np.random.default_rng(0).normal(size=(6, 4))
  counts = np.array([0, 0, 5, 1, 2, 3])
  kw = dict(item_vectors=vectors, item_genres=GENRES, item_popularity=counts,
            relevant=[{3}, {4}], expected=[set(), {4}], histories=np.array([[2, 3], [5, 0]]))
  want = ba.beyond_accuracy(base, **kw)
  got = ba.beyond_accuracy(padded, pad=-1, **{**kw, "histories": np.array([[2, 3], [5, -1]])})
  assert set(want) == {"coverage", "exposure_gini", "intra_list_diversity", "genre_entropy",
                       "calibration_kl", "novelty", "serendipity"}
  for name in want:
    assert got[name] == pytest.approx(want[name]), name


def test_beyond_accuracy_computes_only_what_inputs_allow():
  assert set(ba.beyond_accuracy(LISTS, 10)) == {"coverage", "exposure_gini"}
  assert set(ba.beyond_accuracy(LISTS, item_genres=np.zeros((10, 1), int))) == {
      "coverage", "exposure_gini", "genre_entropy"}
  assert ba.beyond_accuracy(LISTS) == {}
