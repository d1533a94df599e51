"""The long-history synthetic source: shape of the log, determinism, drift, long-range signal."""

import numpy as np
import pytest

from jaxrec.data.events import EventType
from jaxrec.data.prepare import prepare
from jaxrec.data.sources import load_raw
from jaxrec.data.synthetic_sessions import (LongHistoryConfig, _release_times,
                                            generate_long_histories)
from jaxrec.errors import UserError
from jaxrec.eval.metrics.long_history_reference import LongHistoryReference

SMALL = dict(num_users=60, min_events=600, mean_extra_events=100, num_topics=30,
             interests_per_user=20, items_per_style=20, chunk_users=25)


@pytest.fixture(scope="module")
def small():
  config = LongHistoryConfig(**SMALL)
  return config, generate_long_histories(config)


def _plays(raw):
  events = raw.events
  play = events.event_type == EventType.PLAY
  return events.user[play], events.item[play]


def test_every_user_has_at_least_min_events_tokens_in_time_order(small, tmp_path):
  config, raw = small
  events = raw.events
  assert set(np.unique(events.event_type)) == {EventType.PLAY, EventType.LIKE}
  users, items = _plays(raw)
  assert np.bincount(users).min() >= config.min_events
  assert items.min() >= 0 and items.max() < config.num_items
  for u in range(config.num_users):
    times = events.timestamp[events.user == u]
    assert np.all(np.diff(times) > 0)
  # A like follows its play a minute later and merges into the play's token.
  ds = prepare(raw, str(tmp_path / "long"))
  assert ds.stats["tokens"] == len(users)
  assert ds.stats["tokens_per_user"]["mean"] >= config.min_events
  assert ds.stats["items"] == config.num_items


def test_the_default_world_has_2000_tokens_per_user():
  counts = np.bincount(_plays(generate_long_histories(LongHistoryConfig(num_users=20)))[0])
  assert counts.min() >= 2000


def test_same_seed_same_log_other_seed_another():
  config = dict(SMALL, num_users=10)
  a = generate_long_histories(LongHistoryConfig(**config)).events
  b = generate_long_histories(LongHistoryConfig(**config)).events
  c = generate_long_histories(LongHistoryConfig(**config, seed=1)).events
  for name in ("user", "item", "timestamp", "event_type", "value", "device", "locale"):
    np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
  assert len(a.item) != len(c.item) or not np.array_equal(a.item, c.item)


def test_items_are_rarely_rewatched(small):
  users, items = _plays(small[1])
  distinct = np.mean([len(np.unique(items[users == u])) / np.sum(users == u)
                      for u in range(small[0].num_users)])
  assert distinct > 0.85


def test_items_released_during_the_log_are_watched_only_after_their_release():
  config = LongHistoryConfig(**dict(SMALL, new_item_share=0.2))
  events = generate_long_histories(config).events
  release = _release_times(config)
  assert _release_times(LongHistoryConfig(**SMALL)) is None
  new = release > config.start_time
  assert new.sum() == round(0.2 * config.num_items)
  play = events.event_type == EventType.PLAY
  assert np.all(events.timestamp[play] >= release[events.item[play]])
  watched_new = np.unique(events.item[play][new[events.item[play]]])
  assert len(watched_new) > 0.5 * new.sum()
  distinct = len(np.unique(events.user[play] * config.num_items + events.item[play]))
  assert distinct / play.sum() > 0.8


def _topic_shift(config):
  """Mean total-variation distance between each user's topic mix in the first and last fifth."""
  users, items = _plays(generate_long_histories(config))
  per_topic = config.styles_per_topic * config.items_per_style
  shifts = []
  for u in range(config.num_users):
    topics = items[users == u] // per_topic
    fifth = len(topics) // 5
    first, last = (np.bincount(t, minlength=config.num_topics) / len(t)
                   for t in (topics[:fifth], topics[-fifth:]))
    shifts.append(0.5 * np.abs(first - last).sum())
  return np.mean(shifts)


def test_interests_drift():
  still = _topic_shift(LongHistoryConfig(**SMALL, drift=0.0))
  drifting = _topic_shift(LongHistoryConfig(**SMALL, drift=0.2))
  assert drifting > still + 0.1, (still, drifting)


def _reference_ndcg(config, items_by_user, context: int) -> float:
  """NDCG@10 of the scorer that knows the world's rules reading the last `context` tokens, on
  each user's last 5 tokens (seen items excluded)."""
  reference = LongHistoryReference(config)
  gains = []
  for items in items_by_user:
    for t in range(len(items) - 5, len(items)):
      score = reference.scores(items[:t], context)
      rank = np.sum(score > score[items[t]])
      gains.append(1 / np.log2(rank + 2) if rank < 10 else 0)
  return float(np.mean(gains))


def _short_and_long(**options):
  config = LongHistoryConfig(num_users=120, **options)
  users, items = _plays(generate_long_histories(config))
  by_user = [items[users == u] for u in range(config.num_users)]
  return _reference_ndcg(config, by_user, 200), _reference_ndcg(config, by_user, 2000)


def test_long_range_history_predicts_the_next_items():
  """The same scorer does clearly better reading 2,000 tokens than the last 200 (+20% here)."""
  short, long = _short_and_long()
  assert long > 1.1 * short, (short, long)
  # The gap comes from the many interests and their favourite styles: with 10 interests and no
  # favourite style the last 200 tokens tell as much as 2,000.
  short, long = _short_and_long(interests_per_user=10, style_bonus=1.0)
  assert long < 1.03 * short, (short, long)


def test_load_raw_and_bad_options():
  raw = load_raw("synthetic-long", synthetic=dict(SMALL, num_users=3, seed=None))
  assert len(np.unique(raw.events.user)) == 3
  with pytest.raises(UserError, match="num_events"):
    load_raw("synthetic-long", synthetic={"num_events": 10})
  with pytest.raises(UserError, match="interests_per_user"):
    generate_long_histories(LongHistoryConfig(num_topics=5, interests_per_user=6))
  with pytest.raises(UserError, match="max_events"):
    generate_long_histories(LongHistoryConfig(min_events=10, max_events=5))
  with pytest.raises(UserError, match="style_bonus"):
    generate_long_histories(LongHistoryConfig(style_bonus=0.5))
  with pytest.raises(UserError, match="new_item_share"):
    generate_long_histories(LongHistoryConfig(new_item_share=1.0))
