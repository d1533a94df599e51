"""A seeded synthetic event log with the structure real logs have, at any scale.

Items have genres, a latent vector, Zipf popularity and a release time (some are released during
the log: cold start). Users have a drifting latent taste, heavy-tailed activity, a home device, a
locale and a preferred hour. A popularity-and-taste logging policy shows each impression one
already-released item; the user answers with click / watch / like / share / skip / report rows
whose probabilities follow the taste-item affinity, so models have something real to learn.

Users are generated in chunks and every per-event step is vectorised, so 1M users x 1M items x
50M rows fits in a few GiB. Randomness comes from `np.random.default_rng([seed, stream, chunk])`:
the same config always gives the same log.
"""

from __future__ import annotations

import dataclasses
from typing import Iterator

import numpy as np

from jaxrec.data.events import EventLog, EventType, RawDataset, SideTable
from jaxrec.errors import UserError

DAY = 86_400
DEVICES = np.array(["phone", "tv", "tablet", "web"])
DEVICE_P = np.array([0.45, 0.25, 0.12, 0.18])
LOCALES = np.array(["en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "pt_BR", "ja_JP", "ko_KR",
                    "it_IT", "hi_IN"])
COUNTRIES = np.array([locale[3:] for locale in LOCALES])
LOCALE_P = np.array([0.35, 0.08, 0.1, 0.08, 0.07, 0.1, 0.08, 0.05, 0.04, 0.05])
AGE_BUCKETS = np.array(["18-24", "25-34", "35-44", "45-54", "55+"])
SYLLABLES = np.array([c + v for c in "bdfgklmnprstvz" for v in "aeiou"])

CANDIDATES = 4                # items the logging policy weighs per impression
POLICY_SCALE = 3.0            # how strongly the policy prefers affine candidates (vs Gumbel noise)
SCALE, BIAS = 5.0, -2.0       # affinity = sigmoid(SCALE * <taste(t), item> + BIAS)
_ITEMS, _USERS, _PILOT, _CHUNK = range(4)  # independent seed streams


@dataclasses.dataclass
class SyntheticConfig:
  num_users: int = 1000
  num_items: int = 2000
  num_events: int = 100_000        # target number of event rows (met within a few %)
  num_genres: int = 18
  dim: int = 16                    # latent taste dimension
  days: int = 60                   # span of the log
  new_item_fraction: float = 0.2   # items released during the span; the rest exist before it
  zipf_exponent: float = 1.1       # item popularity power law
  drift: float = 0.5               # how far user tastes move toward a new genre over the span
  seed: int = 0
  start_time: int = 1_700_000_000  # unix seconds
  chunk_users: int = 50_000        # users generated per chunk (bounds memory)

  def validate(self):
    for name in ("num_users", "num_items", "num_events", "num_genres", "dim", "days",
                 "chunk_users"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value <= 0:
        raise UserError(f"synthetic: {name} must be a positive integer, got {value!r}")
    if self.num_events < self.num_users:
      raise UserError(f"synthetic: num_events ({self.num_events}) must be at least num_users "
                      f"({self.num_users}): every user gets at least one impression")
    if not 0 <= self.new_item_fraction < 1:
      raise UserError("synthetic: new_item_fraction must be in [0, 1) (some items must exist "
                      f"before the log starts), got {self.new_item_fraction!r}")
    if not (np.isfinite(self.zipf_exponent) and self.zipf_exponent >= 0):
      raise UserError(f"synthetic: zipf_exponent must be >= 0, got {self.zipf_exponent!r}")
    if not (np.isfinite(self.drift) and self.drift >= 0):
      raise UserError(f"synthetic: drift must be >= 0, got {self.drift!r}")
    for name in ("seed", "start_time"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value < 0:
        raise UserError(f"synthetic: {name} must be a non-negative integer, got {value!r}")


@dataclasses.dataclass
class _Items:
  """Item state the event simulation needs. Per-item arrays are indexed by popularity rank:
  popular items sit together in memory, so the (Zipf-distributed) lookups mostly hit cache."""
  centroids: np.ndarray      # (genres, dim) genre centroids, shared with user tastes
  vec: np.ndarray            # (items, dim) float32 latent vectors
  release: np.ndarray        # int64 release time
  item_id: np.ndarray        # int64 item id
  by_release: np.ndarray     # ranks ordered by release time, for exact sampling of leftovers
  release_sorted: np.ndarray
  cum_weight: np.ndarray     # popularity cumsum in release order
  table: SideTable


def _rng(config, stream, chunk=0):
  return np.random.default_rng([config.seed, stream, chunk])


def _unit(x):
  return (x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-6)).astype(np.float32)


def _zipf_ranks(u, n, s):
  """Inverse CDF of a continuous power law on [1, n + 1), floored: rank r has weight
  W(r + 2) - W(r + 1) with W(x) = x^(1-s) / (1-s). O(1) per draw, unlike a search on a cumsum."""
  e = 1.0 - s
  if abs(e) < 1e-6:
    x = np.exp(u * np.log(n + 1.0))
  else:
    x = np.exp(np.log1p(u * np.expm1(e * np.log(n + 1.0))) / e)
  return np.minimum(x.astype(np.int64) - 1, n - 1)  # the clip guards rounding at u -> 1


def _make_items(config: SyntheticConfig) -> _Items:
  rng, n, g = _rng(config, _ITEMS), config.num_items, config.num_genres
  centroids = _unit(rng.standard_normal((g, config.dim)))
  genre_p = rng.permutation(1.0 / np.arange(1, g + 1) ** 0.8)  # some genres are niche
  genre1 = rng.choice(g, n, p=genre_p / genre_p.sum())
  has2 = (rng.random(n) < 0.35) & (g > 1)
  genre2 = (genre1 + rng.integers(1, max(g, 2), n)) % g  # never the primary genre
  vec = _unit(centroids[genre1] + 0.5 * has2[:, None] * centroids[genre2]
              + 0.35 * rng.standard_normal((n, config.dim), np.float32))
  # Rank order (the arrays above) is independent of item ids, genres and release times.
  item_id = rng.permutation(n).astype(np.int64)
  num_new = min(int(round(config.new_item_fraction * n)), n - 1)
  is_new = np.zeros(n, bool)
  is_new[rng.choice(n, num_new, replace=False)] = True
  release = np.where(is_new, config.start_time + rng.integers(0, config.days * DAY, n),
                     config.start_time - rng.integers(1, 30 * 365 * DAY, n))
  s = config.zipf_exponent
  x = np.arange(1, n + 2, dtype=np.float64)
  weight = np.diff(np.log(x) if abs(1 - s) < 1e-6 else x ** (1 - s) / (1 - s))
  by_release = np.argsort(release, kind="stable")

  # Titles: 1-3 pseudo-words, the first often from the primary genre's own slice of the
  # vocabulary, so titles carry a content signal for cold-start items.
  words_per_genre = 40
  vocab_size = g * words_per_genre + 2000
  def syllables(k):
    return SYLLABLES[rng.integers(0, len(SYLLABLES), k)]
  word = np.strings.add(syllables(vocab_size), syllables(vocab_size))  # 2-4 syllables
  for p in (0.6, 0.2):
    word = np.where(rng.random(vocab_size) < p, np.strings.add(word, syllables(vocab_size)), word)
  word = np.strings.capitalize(word)
  first = np.where(rng.random(n) < 0.6, genre1 * words_per_genre
                   + rng.integers(0, words_per_genre, n), rng.integers(0, vocab_size, n))
  title = word[first]
  for k in range(2):
    more = word[rng.integers(0, vocab_size, n)]
    title = np.where(rng.random(n) < 0.5, np.strings.add(np.strings.add(title, " "), more), title)

  names = np.array([f"genre{i:02d}" for i in range(g)])
  genres = np.where(has2, np.strings.add(np.strings.add(names[genre1], "|"), names[genre2]),
                    names[genre1])
  year = release.astype("datetime64[s]").astype("datetime64[Y]").astype(np.int64) + 1970
  order = np.argsort(item_id)  # side table rows in item id order
  table = SideTable(
      ids=np.arange(n, dtype=np.int64),
      columns={"title": title[order], "year": year[order].astype(str), "genres": genres[order],
               "release_time": release[order].astype(str)},
      multi_valued=("genres",))
  return _Items(centroids, vec, release, item_id, by_release, release[by_release],
                np.cumsum(weight[by_release]), table)


def _tastes(rng, config, centroids, age):
  """Base taste (a mix of 1-3 genres, the first tied to the age bucket) and the genre direction
  the taste drifts toward over the span."""
  n, g = len(age), config.num_genres
  genres = rng.integers(0, g, (n, 3))
  genres[:, 0] = np.where(rng.random(n) < 0.5, (age * 3 + rng.integers(0, 3, n)) % g, genres[:, 0])
  mix = rng.exponential(size=(n, 3)) * (np.arange(3) < rng.integers(1, 4, n)[:, None])
  base = _unit(np.einsum("nk,nkd->nd", mix, centroids[genres])
               + 0.3 * rng.standard_normal((n, config.dim)))
  target = _unit(centroids[rng.integers(0, g, n)] + 0.3 * rng.standard_normal((n, config.dim)))
  return base, target


def _sample_ranks(rng, items, config, t):
  """Popularity-sampled item ranks released by time t: Zipf draws, redrawing the few that are
  not yet released; any left after a few rounds are drawn exactly from the released prefix."""
  n, s = config.num_items, config.zipf_exponent
  ranks = _zipf_ranks(rng.random(len(t)), n, s)
  bad = np.flatnonzero(items.release[ranks] > t)
  for _ in range(4):
    if not len(bad):
      return ranks
    ranks[bad] = _zipf_ranks(rng.random(len(bad)), n, s)
    bad = bad[items.release[ranks[bad]] > t[bad]]
  released = np.searchsorted(items.release_sorted, t[bad], "right")  # >= 1: old items exist
  pick = np.searchsorted(items.cum_weight,
                         rng.random(len(bad)) * items.cum_weight[released - 1], "right")
  ranks[bad] = items.by_release[np.minimum(pick, released - 1)]
  return ranks


def _simulate(rng, config, items, base, target, hour, imp_user):
  """Impressions of local users `imp_user` and the responses to them, as (impression index,
  event type, timestamp, value) rows grouped by impression, and the shown item ranks."""
  e = len(imp_user)
  hod = (hour[imp_user] + np.rint(rng.normal(0, 2.5, e)).astype(np.int64)) % 24  # diurnal
  t = (config.start_time + rng.integers(0, config.days, e) * DAY + hod * 3600
       + rng.integers(0, 3600, e))
  frac = ((t - config.start_time) / (config.days * DAY)).astype(np.float32)
  drift = (config.drift * frac)[:, None]
  taste = base.take(imp_user, 0) + drift * (target - base).take(imp_user, 0)

  ranks = _sample_ranks(rng, items, config, np.repeat(t, CANDIDATES)).reshape(e, CANDIDATES)
  dots = np.stack([np.einsum("ed,ed->e", taste, items.vec.take(ranks[:, k], 0))
                   for k in range(CANDIDATES)], 1)
  best = np.argmax(POLICY_SCALE * dots + rng.gumbel(size=dots.shape), 1)
  shown = ranks[np.arange(e), best]
  affinity = 1 / (1 + np.exp(-(SCALE * dots[np.arange(e), best] + BIAS)))

  clicked = np.flatnonzero(rng.random(e) < affinity)
  c, a = len(clicked), affinity[clicked]
  watch = np.clip(0.1 + 0.8 * a + rng.normal(0, 0.2, c), 0.01, 1.0)  # total watch fraction
  click_t = t[clicked] + rng.integers(2, 30, c)
  num_watch = rng.integers(1, 5, c)
  w = np.repeat(np.arange(c), num_watch)  # watch row -> click
  pos = np.arange(len(w)) - np.repeat(np.cumsum(num_watch) - num_watch, num_watch)
  part = rng.exponential(size=len(w))  # Dirichlet(1) split of the watch fraction over the rows
  watch_value = watch[w] * part / np.bincount(w, part, c)[w]
  watch_type = np.where(pos == 0, EventType.PLAY, rng.choice(
      [EventType.PAUSE, EventType.SEEK, EventType.PLAY], len(w), p=[0.5, 0.3, 0.2]))
  done_t = click_t + num_watch * 60 + rng.integers(1, 30, c)
  like = rng.random(c) < 0.02 + 0.3 * watch ** 2
  share = rng.random(c) < 0.005 + 0.06 * watch ** 2
  after = t + rng.integers(1, 15, e)  # when a skip or report comes: soon, or after watching
  short = np.zeros(e, bool)
  short[clicked[watch < 0.1]] = True
  after[clicked] = done_t
  skip = np.where(short, rng.random(e) < 0.8, rng.random(e) < 0.6)
  skip[clicked[watch >= 0.1]] = False
  report = rng.random(e) < 0.0005 + 0.01 * (1 - affinity) ** 4

  groups = [(np.arange(e), EventType.IMPRESSION, t, None),
            (clicked, EventType.CLICK, click_t, None),
            (clicked[w], watch_type, click_t[w] + pos * 60 + rng.integers(1, 60, len(w)),
             watch_value),
            (clicked[like], EventType.LIKE, done_t[like] + 1, None),
            (clicked[share], EventType.SHARE, done_t[share] + 2, None),
            (np.flatnonzero(skip), EventType.SKIP, after[skip], None),
            (np.flatnonzero(report), EventType.REPORT, after[report] + 3, None)]
  imp = np.concatenate([g[0] for g in groups])
  # Each group is sorted by impression, so this stable sort only merges a few runs.
  order = np.argsort(imp, kind="stable")
  kind = np.concatenate([np.broadcast_to(np.int8(g[1]), len(g[0])) if np.isscalar(g[1])
                         else g[1].astype(np.int8) for g in groups])
  time = np.concatenate([g[2] for g in groups])
  value = np.concatenate([np.zeros(len(g[0]), np.float32) if g[3] is None
                          else g[3].astype(np.float32) for g in groups])
  return imp[order], kind[order], time[order], value[order], shown


def _make_users(config, items):
  """Per-user scalars for all users (small), and impression counts: heavy-tailed, at least one
  each, scaled by the rows per impression a pilot simulation measures so the row count is met."""
  rng, n = _rng(config, _USERS), config.num_users
  age = rng.integers(0, len(AGE_BUCKETS), n)
  locale = rng.choice(len(LOCALES), n, p=LOCALE_P)
  home = rng.choice(len(DEVICES), n, p=DEVICE_P)
  hour = np.round(rng.normal(20, 3, n)).astype(np.int64) % 24  # evenings mostly

  pilot_rng, pilot = _rng(config, _PILOT), 2000
  pilot_age = pilot_rng.integers(0, len(AGE_BUCKETS), pilot)
  base, target = _tastes(pilot_rng, config, items.centroids, pilot_age)
  imp = np.repeat(np.arange(pilot), 20)
  rows = len(_simulate(pilot_rng, config, items, base, target,
                       pilot_rng.integers(0, 24, pilot), imp)[0])
  impressions = max(n, int(round(config.num_events * len(imp) / rows)))
  activity = rng.lognormal(0, 1.2, n)
  counts = 1 + rng.multinomial(impressions - n, activity / activity.sum())
  users = SideTable(ids=np.arange(n, dtype=np.int64),
                    columns={"age_bucket": AGE_BUCKETS[age],
                             "country": COUNTRIES[locale]})
  return dict(age=age, locale=locale, home=home, hour=hour, counts=counts), users


def num_chunks(config: SyntheticConfig) -> int:
  return -(-config.num_users // config.chunk_users)


def _chunk(config, items, profile, chunk: int) -> EventLog:
  """The events of users [chunk * chunk_users, ...): each chunk has its own random stream, so
  chunks can be generated apart (the Beam pipeline does, one per worker) and give the same log."""
  lo = chunk * config.chunk_users
  hi = min(lo + config.chunk_users, config.num_users)
  rng = _rng(config, _CHUNK, chunk)
  base, target = _tastes(rng, config, items.centroids, profile["age"][lo:hi])
  imp_user = np.repeat(np.arange(hi - lo), profile["counts"][lo:hi])
  imp, kind, time, value, shown = _simulate(rng, config, items, base, target,
                                            profile["hour"][lo:hi], imp_user)
  # Mostly the home device; sometimes another one.
  device = np.where(rng.random(len(imp_user)) < 0.85, profile["home"][lo:hi][imp_user],
                    rng.choice(len(DEVICES), len(imp_user), p=DEVICE_P))
  row_user = imp_user[imp]
  return EventLog(user=lo + row_user.astype(np.int64), item=items.item_id[shown[imp]],
                  timestamp=time.astype(np.int64), event_type=kind, value=value,
                  device=DEVICES[device[imp]], locale=LOCALES[profile["locale"][lo:hi][row_user]])


def _chunks(config, items, profile) -> Iterator[EventLog]:
  for chunk in range(num_chunks(config)):
    yield _chunk(config, items, profile, chunk)


def world(config: SyntheticConfig):
  """(items, per-user profile, user side table): what every chunk is generated from; small
  (per item and per user, not per event), so each worker of a distributed run rebuilds it."""
  config.validate()
  items = _make_items(config)
  profile, users = _make_users(config, items)
  return items, profile, users


def generate_chunk(config: SyntheticConfig, chunk: int, world_=None) -> EventLog:
  """Chunk `chunk` of the log alone (users chunk * chunk_users onwards)."""
  items, profile, _ = world_ or world(config)
  return _chunk(config, items, profile, chunk)


def generate_chunks(config: SyntheticConfig) -> Iterator[EventLog]:
  """The event log in chunks of `config.chunk_users` users, in user order (side tables come only
  from `generate`)."""
  config.validate()
  items = _make_items(config)
  yield from _chunks(config, items, _make_users(config, items)[0])


def generate(config: SyntheticConfig) -> RawDataset:
  """The whole synthetic dataset: events plus item and user side tables."""
  config.validate()
  items = _make_items(config)
  profile, users = _make_users(config, items)
  logs = list(_chunks(config, items, profile))
  # Concatenate column by column, dropping each column's chunks as soon as it is copied, so peak
  # memory is the output plus one column rather than twice the output.
  columns = {}
  for field in dataclasses.fields(EventLog):
    columns[field.name] = np.concatenate([getattr(log, field.name) for log in logs])
    for log in logs:
      setattr(log, field.name, None)
  return RawDataset("synthetic", EventLog(**columns), items.table, users,
                    source_config=dataclasses.asdict(config))
