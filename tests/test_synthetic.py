"""Tests for the synthetic event log generator."""

import dataclasses

import numpy as np
import pytest

from jaxrec.data.events import EventLog, EventType
from jaxrec.data.synthetic import SyntheticConfig, generate, generate_chunks
from jaxrec.errors import UserError

SMALL = SyntheticConfig(num_users=400, num_items=800, num_events=20_000, chunk_users=150)
WATCH = (EventType.PLAY, EventType.PAUSE, EventType.SEEK)


@pytest.fixture(scope="module")
def data():
  return generate(SMALL)


def _columns_equal(a: EventLog, b: EventLog) -> bool:
  return all(np.array_equal(getattr(a, f.name), getattr(b, f.name))
             for f in dataclasses.fields(EventLog))


def _impression_index(events):
  """Row -> index of the impression it belongs to (rows are grouped by impression)."""
  return np.cumsum(events.event_type == EventType.IMPRESSION) - 1


def test_schema(data):
  ev = data.events
  assert data.name == "synthetic"
  assert ev.user.dtype == np.int64 and ev.item.dtype == np.int64
  assert ev.timestamp.dtype == np.int64 and ev.event_type.dtype == np.int8
  assert ev.value.dtype == np.float32
  assert ev.device.dtype.kind == "U" and ev.locale.dtype.kind == "U"
  assert set(np.unique(ev.device)) <= {"phone", "tv", "tablet", "web"}
  assert ev.event_type[0] == EventType.IMPRESSION
  np.testing.assert_array_equal(data.items.ids, np.arange(SMALL.num_items))
  np.testing.assert_array_equal(data.users.ids, np.arange(SMALL.num_users))
  assert set(data.items.columns) == {"title", "year", "genres", "release_time"}
  assert data.items.multi_valued == ("genres",)
  assert {"age_bucket", "country"} <= set(data.users.columns)
  for genres in data.items.columns["genres"][:50]:
    parts = genres.split("|")
    assert 1 <= len(parts) <= 2 and len(set(parts)) == len(parts)
    assert all(p.startswith("genre") for p in parts)
  assert all(1 <= len(t.split()) <= 3 for t in data.items.columns["title"][:50])
  # Every user has at least one impression; ids stay in range.
  assert np.array_equal(np.unique(ev.user[ev.event_type == EventType.IMPRESSION]),
                        np.arange(SMALL.num_users))
  assert ev.item.min() >= 0 and ev.item.max() < SMALL.num_items


def test_deterministic(data):
  again = generate(SMALL)
  assert _columns_equal(data.events, again.events)
  for name in data.items.columns:
    np.testing.assert_array_equal(data.items.columns[name], again.items.columns[name])
  for name in data.users.columns:
    np.testing.assert_array_equal(data.users.columns[name], again.users.columns[name])


def test_seed_changes_output(data):
  other = generate(dataclasses.replace(SMALL, seed=1))
  assert not np.array_equal(data.items.columns["genres"], other.items.columns["genres"])
  n = min(len(data.events), len(other.events))
  assert not np.array_equal(data.events.item[:n], other.events.item[:n])


def test_chunks_concatenate_to_generate(data):
  chunks = list(generate_chunks(SMALL))
  assert len(chunks) == 3  # 400 users in chunks of 150
  assert _columns_equal(EventLog.concatenate(chunks), data.events)


@pytest.mark.parametrize("config", [
    SMALL,
    SyntheticConfig(num_users=300, num_items=5000, num_events=15_000, new_item_fraction=0.6,
                    zipf_exponent=0.7, drift=1.0, seed=3),
    SyntheticConfig(num_users=50, num_items=100, num_events=8_000, num_genres=1, dim=4, days=3),
])
def test_row_count_near_target(config):
  rows = len(generate(config).events)
  assert abs(rows - config.num_events) <= 0.1 * config.num_events


def test_all_event_types_present(data):
  expected = {EventType.IMPRESSION, EventType.SKIP, EventType.CLICK, EventType.PLAY,
              EventType.PAUSE, EventType.SEEK, EventType.LIKE, EventType.SHARE, EventType.REPORT}
  assert set(np.unique(data.events.event_type).tolist()) == {int(t) for t in expected}


def test_no_event_before_release(data):
  release = data.items.columns["release_time"].astype(np.int64)
  assert np.all(data.events.timestamp >= release[data.events.item])


def test_new_items_released_during_span(data):
  release = data.items.columns["release_time"].astype(np.int64)
  end = SMALL.start_time + SMALL.days * 86_400
  new = (release >= SMALL.start_time) & (release < end)
  assert abs(new.mean() - SMALL.new_item_fraction) < 0.01
  assert np.all(release[~new] < SMALL.start_time)
  shown_new = new[data.events.item[data.events.event_type == EventType.IMPRESSION]]
  assert shown_new.mean() > 0.01  # cold-start items do get shown
  years = data.items.columns["year"].astype(int)
  assert years.min() >= 1990 and years.max() <= 2024


def test_popularity_heavy_tailed(data):
  shown = data.events.item[data.events.event_type == EventType.IMPRESSION]
  counts = np.sort(np.bincount(shown, minlength=SMALL.num_items))[::-1]
  top = counts[:SMALL.num_items // 100].sum() / counts.sum()
  assert top > 0.25  # uniform popularity would give 0.01


def test_activity_heavy_tailed(data):
  impressions = np.bincount(data.events.user[data.events.event_type == EventType.IMPRESSION])
  assert impressions.min() >= 1
  assert impressions.max() > 5 * np.median(impressions)


def test_taste_drives_clicks():
  """A user's favourite genre, learnt from clicks in the first half of their log, gets a higher
  click rate in the second half. With responses independent of taste the rates would be equal."""
  config = dataclasses.replace(SMALL, num_users=500, num_items=1000, num_events=30_000, drift=0.0)
  data = generate(config)
  ev = data.events
  genre = np.array([int(g.split("|")[0][len("genre"):]) for g in data.items.columns["genres"]])
  is_imp = ev.event_type == EventType.IMPRESSION
  clicked = np.zeros(is_imp.sum(), bool)
  clicked[_impression_index(ev)[ev.event_type == EventType.CLICK]] = True
  user, time, g = ev.user[is_imp], ev.timestamp[is_imp], genre[ev.item[is_imp]]
  median = np.array([np.median(time[user == u]) for u in range(config.num_users)])
  first = time <= median[user]
  counts = np.zeros((config.num_users, config.num_genres))
  np.add.at(counts, (user[first & clicked], g[first & clicked]), 1)
  favourite = counts.argmax(1)
  later = ~first & (counts.sum(1) > 0)[user]
  on_favourite = g == favourite[user]
  assert clicked[later & on_favourite].mean() > 1.3 * clicked[later & ~on_favourite].mean()


def test_response_structure(data):
  ev = data.events
  imp = _impression_index(ev)
  imp_time = ev.timestamp[ev.event_type == EventType.IMPRESSION]
  delay = ev.timestamp - imp_time[imp]
  assert delay.min() >= 0 and delay.max() < 600  # follow-ups within minutes
  # Each impression's rows share user, item and device.
  first = np.flatnonzero(ev.event_type == EventType.IMPRESSION)
  for column in (ev.user, ev.item, ev.device, ev.locale):
    assert np.array_equal(column, column[first][imp])
  watch = np.isin(ev.event_type, WATCH)
  assert np.all(ev.value[~watch] == 0) and np.all(ev.value[watch] > 0)
  # Watch rows follow a click, and their fractions sum to a total watch fraction in (0, 1].
  clicked = np.zeros(len(first), bool)
  clicked[imp[ev.event_type == EventType.CLICK]] = True
  assert clicked[imp[watch]].all()
  total = np.bincount(imp[watch], ev.value[watch], len(first))
  assert np.all(total[clicked] > 0) and total.max() <= 1 + 1e-5
  per_click = np.bincount(imp[watch], minlength=len(first))[clicked]
  assert per_click.min() == 1 and per_click.max() == 4
  # Likes go with longer watches.
  liked = np.zeros(len(first), bool)
  liked[imp[ev.event_type == EventType.LIKE]] = True
  assert total[liked].mean() > total[clicked & ~liked].mean()


@pytest.mark.parametrize("change", [
    dict(num_users=0), dict(num_items=-1), dict(num_events=0), dict(num_genres=0), dict(dim=0),
    dict(days=0), dict(chunk_users=0), dict(num_users=10, num_events=5),
    dict(new_item_fraction=1.0), dict(new_item_fraction=-0.1), dict(zipf_exponent=-1.0),
    dict(zipf_exponent=float("nan")), dict(drift=-0.5), dict(seed=-1), dict(num_users=2.5),
])
def test_validate_rejects_bad_configs(change):
  config = dataclasses.replace(SMALL, **change)
  with pytest.raises(UserError, match="synthetic"):
    config.validate()
  with pytest.raises(UserError):
    generate(config)


def test_validate_accepts_edge_configs():
  generate(SyntheticConfig(num_users=1, num_items=1, num_events=1, new_item_fraction=0.5))
  generate(SyntheticConfig(num_users=20, num_items=30, num_events=500, zipf_exponent=1.0,
                           new_item_fraction=0.0, drift=0.0))
