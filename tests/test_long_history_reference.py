"""The synthetic-long world's rules as a scorer: a distribution over unwatched items, read from a
window, evaluated with the trainer's protocol."""

import numpy as np
import pytest

from jaxrec.data.events import EventType
from jaxrec.data.prepare import prepare
from jaxrec.data.synthetic_sessions import LongHistoryConfig, generate_long_histories
from jaxrec.eval.metrics.long_history_reference import LongHistoryReference, reference_metrics

SMALL = LongHistoryConfig(num_users=12, min_events=300, mean_extra_events=50, num_topics=20,
                          interests_per_user=8, items_per_style=10)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
  raw = generate_long_histories(SMALL)
  return raw, prepare(raw, str(tmp_path_factory.mktemp("long") / "ds"))


def test_scores_are_a_distribution_over_unwatched_items():
  reference = LongHistoryReference(SMALL)
  history = np.array([5, 6, 17, 250, 251, 5 + 40])
  scores = reference.scores(history, window=None)
  assert np.all(np.isneginf(scores[history]))
  rest = np.delete(scores, history)
  assert np.all(rest > 0) and np.isclose(rest.sum(), 1.0)
  # 40 items a topic, 10 a style: the session most likely goes on in the last token's topic
  # (item 45: topic 1, items 40..79), there in the style it showed (items 40..49), most popular
  # first.
  assert np.where(np.isfinite(scores), scores, 0)[40:80].sum() > 0.8
  assert np.argmax(scores) == 40


def test_without_style_inference_every_style_of_a_topic_looks_alike():
  history = np.array([5, 6, 17, 250, 251, 45, 46])  # topic 1 (items 40..79) watched in style 0
  styled, plain = LongHistoryReference(SMALL), LongHistoryReference(SMALL, infer_style=False)
  # Rank 2 in style 0 (item 42) against rank 2 in style 1 (item 52): the same popularity.
  assert styled.scores(history, None)[42] > 3 * styled.scores(history, None)[52]
  assert plain.scores(history, None)[42] == pytest.approx(plain.scores(history, None)[52])


def test_window_reads_only_the_last_tokens():
  reference = LongHistoryReference(SMALL)
  history = np.array([0, 1, 2, 3, 120, 121, 122])
  np.testing.assert_allclose(reference.scores(history, None), reference.scores(history, 7))
  # Reading only the last 3 tokens, the topic of items 0..3 looks no likelier than any other
  # unseen topic; reading all 7, it does.
  short, full = reference.scores(history, 3), reference.scores(history, None)
  assert full[4:40].sum() > short[4:40].sum()
  # ... but what was watched stays excluded whatever the window.
  assert np.all(np.isneginf(short[history]))


def test_metrics_rank_each_users_held_out_token(world):
  raw, dataset = world
  out = reference_metrics(dataset, SMALL, window=100, split="test")
  assert out["num_users"] == SMALL.num_users
  # Recomputed by hand on the raw log: the last play of each user, ranked among unwatched items.
  reference = LongHistoryReference(SMALL)
  play = raw.events.event_type == EventType.PLAY
  hits = []
  for user in np.unique(raw.events.user):
    items = raw.events.item[play & (raw.events.user == user)]
    scores = reference.scores(items[:-1], 100)
    hits.append(np.sum(scores > scores[items[-1]]) < 10)
  assert out["recall@10"] == pytest.approx(np.mean(hits))
  assert 0 < out["ndcg@10"] <= out["recall@10"]
  assert out["ndcg@10_stderr"] > 0
  with pytest.raises(ValueError, match="split"):
    reference_metrics(dataset, SMALL, window=100, split="train")
