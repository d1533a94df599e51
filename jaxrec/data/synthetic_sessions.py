"""A seeded synthetic log of long histories, where the distant past predicts the next items.

The `synthetic` source models a feed; this one (`--dataset synthetic-long`) models years of one
user's viewing, to test models that read thousands of tokens:

- The catalogue has topics; each topic has styles (sub-genres); each item belongs to one style of
  one topic and has a Zipf popularity within it.
- Each user has many interests (topics, by topic popularity) and, in each interest, a favourite
  style. The interests' weights drift slowly: a random walk of their logs from session to session.
- The log is a sequence of short sessions (geometric lengths); a session picks one interest from
  the user's current weights and stays on it. Within a topic the user watches items in a personal
  order: without replacement, each next item drawn with weight popularity × `style_bonus` for the
  favourite style (Plackett-Luce via Gumbel keys), so what a user watches next in a topic depends
  on everything they watched in it before.

With ~24 interests and sessions of ~6 tokens, the last 200 tokens miss some of a user's
interests, and the favourite style of a topic the user comes back to is often visible only further
back; a model that reads 2,000 tokens sees them. An interest that has used up its topic moves on
to a topic the user has not watched (interests drift in content too). Each token is a play (its
value the watch fraction, higher in the favourite style), sometimes followed by a like of the
same item (which the tokenizer merges into it).

With `new_item_share`, that share of the items is released during the log (at uniform times);
a visit then takes the first item of the personal order that is out and not yet watched, so new
items are watched only after their release, by the users whose topic and favourite style they
belong to: the cold-start benchmark's world where metadata names the taste.

Users are generated in chunks with every step vectorised; randomness comes from
`np.random.default_rng([seed, stream, chunk])`, so a config always gives the same log.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.data.events import EventLog, EventType, RawDataset, SideTable
from jaxrec.data.synthetic import DEVICE_P, DEVICES, LOCALE_P, LOCALES, SYLLABLES
from jaxrec.errors import UserError
from jaxrec.grouping import rank_within_groups

DAY = 86_400
_ITEMS, _USERS, _CHUNK, _RELEASES = range(4)  # independent seed streams


@dataclasses.dataclass
class LongHistoryConfig:
  num_users: int = 1000
  num_topics: int = 60
  styles_per_topic: int = 4
  items_per_style: int = 30
  interests_per_user: int = 24
  min_events: int = 2000           # tokens per user: min_events + exponential(mean_extra_events)
  mean_extra_events: int = 600
  max_events: int = 5000
  mean_session_length: float = 6.0
  style_bonus: float = 20.0        # weight multiplier of the favourite style within a topic
  drift: float = 0.05              # std of each interest's log-weight step per session
  zipf_exponent: float = 1.0       # item popularity within a style; topics' popularity too
  like_probability: float = 0.15   # of a play in the favourite style (a third of it otherwise)
  days: int = 730                  # span of every user's log
  seed: int = 0
  start_time: int = 1_600_000_000
  chunk_users: int = 200           # users generated per chunk (bounds memory)
  # Items released during the log (at uniform times over it); the rest exist when it starts.
  new_item_share: float = 0.0

  def validate(self):
    for name in ("num_users", "num_topics", "styles_per_topic", "items_per_style",
                 "interests_per_user", "min_events", "max_events", "days", "chunk_users"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value <= 0:
        raise UserError(f"synthetic-long: {name} must be a positive integer, got {value!r}")
    if self.interests_per_user > self.num_topics:
      raise UserError(f"synthetic-long: interests_per_user ({self.interests_per_user}) cannot "
                      f"exceed num_topics ({self.num_topics}): each interest is a distinct topic")
    if self.max_events < self.min_events:
      raise UserError(f"synthetic-long: max_events ({self.max_events}) must be >= min_events "
                      f"({self.min_events})")
    if not (isinstance(self.mean_extra_events, (int, np.integer)) and self.mean_extra_events >= 0):
      raise UserError("synthetic-long: mean_extra_events must be an integer >= 0, got "
                      f"{self.mean_extra_events!r}")
    for name, low in (("mean_session_length", 1.0), ("style_bonus", 1.0)):
      value = getattr(self, name)
      if not (np.isfinite(value) and value >= low):
        raise UserError(f"synthetic-long: {name} must be >= {low}, got {value!r}")
    for name in ("drift", "zipf_exponent"):
      value = getattr(self, name)
      if not (np.isfinite(value) and value >= 0):
        raise UserError(f"synthetic-long: {name} must be >= 0, got {value!r}")
    if not 0 <= self.new_item_share < 1:
      raise UserError("synthetic-long: new_item_share must be in [0, 1) (items must exist when "
                      f"the log starts), got {self.new_item_share!r}")
    if not 0 <= self.like_probability <= 1:
      raise UserError("synthetic-long: like_probability must be in [0, 1], got "
                      f"{self.like_probability!r}")
    for name in ("seed", "start_time"):
      value = getattr(self, name)
      if not isinstance(value, (int, np.integer)) or value < 0:
        raise UserError(f"synthetic-long: {name} must be a non-negative integer, got {value!r}")

  @property
  def num_items(self) -> int:
    return self.num_topics * self.styles_per_topic * self.items_per_style

  @classmethod
  def from_options(cls, options: dict | None) -> LongHistoryConfig:
    """From the CLI's / a config's synthetic options, naming any option this source lacks."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - known)
    if unknown:
      raise UserError(f"synthetic-long has no option {', '.join(unknown)}; its options are "
                      f"{', '.join(sorted(known))}.")
    return cls(**options)


def _rng(config, stream, chunk=0):
  return np.random.default_rng([config.seed, stream, chunk])


def _zipf_weights(n: int, s: float) -> np.ndarray:
  w = 1.0 / np.arange(1, n + 1) ** s
  return w / w.sum()


def _item_table(config: LongHistoryConfig, rng) -> SideTable:
  """Item id = (topic * styles + style) * items_per_style + rank in the style. Genres name the
  topic and its style; a title's first word comes from its style's own words (a content signal
  for items without interactions)."""
  t, s, m = config.num_topics, config.styles_per_topic, config.items_per_style
  ids = np.arange(config.num_items, dtype=np.int64)
  topic, style = ids // (s * m), (ids // m) % s
  topic_name = np.char.add("topic", np.char.zfill(topic.astype(str), 3))
  style_name = np.char.add(np.char.add(topic_name, "-style"), style.astype(str))
  words_per_style, shared_words = 8, 2000
  vocab = np.char.capitalize(np.char.add(
      SYLLABLES[rng.integers(0, len(SYLLABLES), t * s * words_per_style + shared_words)],
      SYLLABLES[rng.integers(0, len(SYLLABLES), t * s * words_per_style + shared_words)]))
  first = (topic * s + style) * words_per_style + rng.integers(0, words_per_style, len(ids))
  second = t * s * words_per_style + rng.integers(0, shared_words, len(ids))
  title = np.char.add(np.char.add(vocab[first], " "), vocab[second])
  year = 1950 + rng.integers(0, 71, len(ids))
  return SideTable(ids=ids, columns={"title": title, "year": year.astype(str),
                                     "genres": np.char.add(np.char.add(topic_name, "|"),
                                                           style_name)},
                   multi_valued=("genres",))


def _event_counts(config: LongHistoryConfig) -> np.ndarray:
  rng = _rng(config, _USERS)
  extra = rng.exponential(config.mean_extra_events, config.num_users)
  return np.minimum(config.min_events + np.round(extra).astype(np.int64), config.max_events)


def _release_times(config: LongHistoryConfig) -> np.ndarray | None:
  """Each item's release time: the log's start, or for a random `new_item_share` of the items
  a uniform time over its span (None when every item exists from the start)."""
  if not config.new_item_share:
    return None
  rng = _rng(config, _RELEASES)
  new = rng.permutation(config.num_items)[:round(config.new_item_share * config.num_items)]
  release = np.full(config.num_items, config.start_time, np.int64)
  release[new] = config.start_time + rng.integers(0, config.days * DAY, len(new))
  return release


def _take_in_order(orders: np.ndarray, pair: np.ndarray, visit: np.ndarray, topic: np.ndarray,
                   time: np.ndarray, release: np.ndarray | None, pool: int) -> np.ndarray:
  """The item each visit watches: row r is visit `visit[r]` of personal order `orders[pair[r]]`
  (indices into its topic's `pool` items), in `topic[r]` at `time[r]`. Without releases, the
  visit-th item of the order (round again after `pool` visits). With them, the first item of the
  order released by then and not yet taken; when none is left, a re-watch of the first released."""
  if release is None:
    return topic * pool + orders[pair, visit % pool]
  released = release.reshape(-1, pool)
  taken = np.zeros(orders.shape, bool)  # by position in the topic, per order
  item = np.empty(len(pair), np.int64)
  by_visit = np.argsort(visit, kind="stable")  # a pair's visits in time order, each after the last
  ends = np.r_[np.flatnonzero(np.diff(visit[by_visit])) + 1, len(by_visit)]
  for rows in np.split(by_visit, ends[:-1]):
    p, candidates = pair[rows], orders[pair[rows]]
    out = released[topic[rows][:, None], candidates] <= time[rows][:, None]
    free = out & ~taken[p[:, None], candidates]
    first = np.where(free.any(axis=1), np.argmax(free, axis=1), np.argmax(out, axis=1))
    choice = candidates[np.arange(len(rows)), first]
    taken[p, choice] = True
    item[rows] = topic[rows] * pool + choice
  return item


def _chunk_log(config: LongHistoryConfig, counts: np.ndarray, first_user: int,
               chunk: int, release: np.ndarray | None = None) -> EventLog:
  rng = _rng(config, _CHUNK, chunk)
  n, k = len(counts), config.interests_per_user
  t, s, m = config.num_topics, config.styles_per_topic, config.items_per_style
  total = int(counts.sum())
  user = np.repeat(np.arange(n), counts)
  position = np.arange(total) - np.repeat(np.cumsum(counts) - counts, counts)

  # Interests: k distinct topics per user, popular topics more often (Gumbel top-k).
  topic_logp = np.log(_zipf_weights(t, config.zipf_exponent))
  # An interest that has used up its topic moves on to a topic the user has not watched yet:
  # interest i's e-th topic is the (i + k·e)-th of the user's own order of all topics.
  topic_order = np.argsort(-(topic_logp + rng.gumbel(size=(n, t))), axis=1)
  eras = -(-t // k) + 1
  favourite = rng.integers(0, s, (n, k, eras))

  # Sessions: a new one starts with probability 1/mean_session_length at each token.
  starts = (position == 0) | (rng.random(total) < 1.0 / config.mean_session_length)
  session = np.cumsum(starts) - 1                          # global session index
  session_user = user[starts]
  num_sessions = len(session_user)
  users_first_session = np.r_[True, session_user[1:] != session_user[:-1]]
  # Interest weights: a Dirichlet(1) mix in log space, drifting by a random walk per session.
  log_w0 = np.log(rng.exponential(size=(n, k)))
  steps = rng.normal(0, config.drift, (num_sessions, k))
  steps[users_first_session] = 0
  walk = _group_cumsum(steps, users_first_session)
  session_interest = np.argmax(log_w0[session_user] + walk + rng.gumbel(size=(num_sessions, k)),
                               axis=1)
  del walk, steps
  interest = session_interest[session]

  # Within a topic, the user's personal order: Gumbel keys over the topic's s*m items, with the
  # favourite style boosted; the j-th visit of an interest takes the j-th item of that order
  # (the first released one left, when items are released during the log), and after s*m visits
  # the interest's next topic (wrapping round, re-watches, only once a heavy user has seen every
  # topic).
  pool = s * m
  visit = rank_within_groups(user * k + interest)
  era = np.minimum(visit // pool, eras - 1)
  topic = topic_order[user, (interest + k * era) % t]
  fav = favourite[user, interest, era]
  item_logp = np.log(_zipf_weights(m, config.zipf_exponent))
  pair = (user * k + interest) * eras + era            # one personal order per (user, interest, era)
  pairs, pair_index = np.unique(pair, return_inverse=True)
  orders = np.empty((len(pairs), pool), np.int32)
  first_row = np.zeros(len(pairs), np.int64)
  first_row[pair_index[::-1]] = np.arange(total)[::-1]  # any row of each pair, for its favourite
  for lo in range(0, len(pairs), 2048):  # bounds the (pairs, s*m) key matrix
    hi = min(lo + 2048, len(pairs))
    keys = (np.tile(item_logp, s)[None, :] + rng.gumbel(size=(hi - lo, pool))
            + np.log(config.style_bonus) * (np.arange(pool)[None, :] // m
                                             == fav[first_row[lo:hi]][:, None]))
    orders[lo:hi] = np.argsort(-keys, axis=1)
  watch_noise, like_draw = rng.normal(0, 0.15, total), rng.random(total)

  # Time: 2-15 minutes between the tokens of a session; an exponential idle time between
  # sessions, so that each user's log spans about `days`.
  gaps = rng.integers(120, 900, total)
  gaps[starts] = 0
  into_session = _group_cumsum(gaps, starts)
  duration = into_session[np.r_[np.flatnonzero(starts)[1:] - 1, total - 1]] + 900
  sessions_of_user = np.bincount(session_user, minlength=n)
  idle = rng.exponential(config.days * DAY / sessions_of_user[session_user])
  pause = np.r_[0, duration[:-1]] + idle.astype(np.int64)
  pause[users_first_session] = 0
  session_start = _group_cumsum(pause, users_first_session)
  play_time = config.start_time + session_start[session] + into_session

  item = _take_in_order(orders, pair_index, visit - era * pool, topic, play_time, release, pool)
  in_favourite = (item // m) % s == fav
  watch = np.clip(np.where(in_favourite, 0.75, 0.45) + watch_noise, 0.02, 1.0)
  like = like_draw < config.like_probability * np.where(in_favourite, 1.0, 1 / 3)

  liked = np.flatnonzero(like)
  home = rng.choice(len(DEVICES), n, p=DEVICE_P)
  locale = rng.choice(len(LOCALES), n, p=LOCALE_P)
  device = np.where(rng.random(total) < 0.85, home[user],
                    rng.choice(len(DEVICES), total, p=DEVICE_P))
  rows = np.concatenate([np.arange(total), liked])
  order = np.argsort(np.concatenate([2 * np.arange(total), 2 * liked + 1]), kind="stable")
  rows = rows[order]
  is_like = np.concatenate([np.zeros(total, bool), np.ones(len(liked), bool)])[order]
  return EventLog(
      user=first_user + user[rows].astype(np.int64), item=item[rows],
      timestamp=play_time[rows] + is_like * 60,
      event_type=np.where(is_like, EventType.LIKE, EventType.PLAY).astype(np.int8),
      value=np.where(is_like, 0.0, watch[rows]).astype(np.float32),
      device=DEVICES[device[rows]], locale=LOCALES[locale[user[rows]]])


def _group_cumsum(values: np.ndarray, first: np.ndarray) -> np.ndarray:
  """Inclusive cumulative sum along axis 0 that restarts where `first` is True (contiguous
  groups, the first element of the array starting one)."""
  total = np.cumsum(values, axis=0)
  start = np.flatnonzero(first)
  before = total[start] - values[start]
  return total - np.repeat(before, np.diff(np.r_[start, len(values)]), axis=0)


def generate_long_histories(config: LongHistoryConfig) -> RawDataset:
  """The whole dataset: events of every user plus the item side table."""
  config.validate()
  items = _item_table(config, _rng(config, _ITEMS))
  counts = _event_counts(config)
  release = _release_times(config)
  logs = []
  for chunk, lo in enumerate(range(0, config.num_users, config.chunk_users)):
    hi = min(lo + config.chunk_users, config.num_users)
    logs.append(_chunk_log(config, counts[lo:hi], lo, chunk, release))
  users = SideTable(ids=np.arange(config.num_users, dtype=np.int64), columns={})
  return RawDataset("synthetic-long", EventLog.concatenate(logs), items, users)
