"""Metadata baselines for cold start on a hand-built catalogue: the numbers worked out by hand."""

import jax.numpy as jnp
import numpy as np

from jaxrec.eval.metrics.cold_start import random_recall
from jaxrec.eval.metrics.metadata_baselines import (genre_profile_scores, item_genre_weights,
                                            metadata_popularity, ranks_with_random_ties,
                                            tie_jitter)

# ids 0 (padding) and 1 (OOV), then items 2..7. Trained: 2, 3, 6. Item 7 carries a year and a
# genre that no trained item has.
COUNTS = np.array([0, 0, 10, 4, 0, 0, 6, 0])
YEAR = np.array([0, 0, 1, 1, 1, 2, 2, 3])
GENRES = np.array([[0, 0], [0, 0], [1, 2], [1, 0], [2, 0], [1, 0], [3, 0], [4, 0]])
METADATA = {"year": YEAR, "genres": GENRES}


def test_metadata_popularity_keeps_counts_and_predicts_new_items_from_shared_metadata():
  scores = metadata_popularity(COUNTS, METADATA)
  overall = 20 / 3  # mean count of the trained items
  np.testing.assert_allclose(scores[[0, 1]], 0)
  np.testing.assert_allclose(scores[[2, 3, 6]], [10, 4, 6])  # trained items: their own counts
  # item 4: year 1 (trained carriers 2, 3: mean 7), genre 2 (carrier 2: mean 10)
  np.testing.assert_allclose(scores[4], overall * (7 / overall) * (10 / overall))
  # item 5: year 2 (carrier 6: mean 6), genre 1 (carriers 2, 3: mean 7)
  np.testing.assert_allclose(scores[5], overall * (6 / overall) * (7 / overall))
  # item 7: nothing trained shares its metadata: the overall mean
  np.testing.assert_allclose(scores[7], overall)
  # without metadata every new item gets the overall mean
  np.testing.assert_allclose(metadata_popularity(COUNTS, {})[[4, 5, 7]], overall)


def test_metadata_popularity_averages_the_factors_of_several_genres():
  genres = GENRES.copy()
  genres[4] = [2, 3]  # genre 2 (mean 10) and genre 3 (mean 6)
  scores = metadata_popularity(COUNTS, {"year": YEAR, "genres": genres})
  overall = 20 / 3
  np.testing.assert_allclose(scores[4], overall * (7 / overall) * ((10 + 6) / 2 / overall))


def test_genre_profile_scores_items_by_the_history_genre_shares():
  weights = jnp.asarray(item_genre_weights(METADATA, len(COUNTS)), jnp.float32)
  seen = jnp.asarray([[2, 3, 0], [6, 0, 0]])
  scores = np.asarray(genre_profile_scores(seen, weights, jnp.zeros(len(COUNTS))))
  # user 0: item 2 = genres {1, 2} (half each), item 3 = genre 1 -> shares 0.75 / 0.25
  np.testing.assert_allclose(scores[0, [2, 3, 4, 5, 6, 7]], [0.5, 0.75, 0.25, 0.75, 0, 0],
                             atol=1e-6)
  np.testing.assert_allclose(scores[1, [2, 3, 4, 5, 6, 7]], [0, 0, 0, 0, 1, 0], atol=1e-6)


def test_recent_genre_profile_halves_an_item_per_half_life():
  weights = jnp.asarray(item_genre_weights(METADATA, len(COUNTS)), jnp.float32)
  seen = jnp.asarray([[6, 3, 0, 0]])  # genre 3, then genre 1 (the most recent)
  scores = np.asarray(genre_profile_scores(seen, weights, jnp.zeros(len(COUNTS)), half_life=1))
  # weights 0.5 (one token old) and 1 -> shares 1/3 and 2/3
  np.testing.assert_allclose(scores[0, [3, 6]], [2 / 3, 1 / 3], atol=1e-6)
  long_ago = np.asarray(genre_profile_scores(seen, weights, jnp.zeros(len(COUNTS)), half_life=1e9))
  np.testing.assert_allclose(long_ago[0, [3, 6]], [0.5, 0.5], atol=1e-6)


def test_tie_jitter_breaks_ties_without_reordering_distinct_shares():
  jitter = tie_jitter(1000)
  assert len(np.unique(jitter)) > 900 and jitter.min() >= 0 and jitter.max() < 1e-5
  shares = np.float32(np.arange(1000) % 7 / 1e4)  # distinct shares 1e-4 apart
  order = np.argsort(-(shares + jitter), kind="stable")
  assert np.all(np.diff(shares[order]) <= 0)


def test_random_recall_is_k_over_candidates():
  assert random_recall((10, 50), 100) == {"recall@10": 0.1, "recall@50": 0.5}
  assert random_recall((50,), 20) == {"recall@50": 1.0}


def test_ranks_keep_the_order_of_scores_and_put_ties_in_a_random_order():
  scores = np.array([5.0, 1.0, 5.0, 3.0] * 50)
  ranks = ranks_with_random_ties(scores)
  assert sorted(ranks.tolist()) == list(range(200))
  assert ranks[scores == 5].min() > ranks[scores == 3].max() > ranks[scores == 1].max()
  fives = np.flatnonzero(scores == 5)
  # not the id order a top-k would fall back to
  assert not np.all(np.diff(ranks[fives]) < 0) and not np.all(np.diff(ranks[fives]) > 0)
