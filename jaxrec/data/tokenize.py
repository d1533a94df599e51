"""Event tokenization: consecutive small events of one user on one item merge into one token.

A user who presses play, pauses, seeks and plays again has watched one film, not four: feeding each
event to a sequence model wastes context and teaches it the UI, not the taste. Following the
published recommendation foundation-model designs, events of the same user on the same item whose
gap to the previous event is at most `merge_gap` seconds become one token carrying the aggregate:
total value (watch fraction, rating), event count, the strongest action and a bitmask of all actions.
"""

from __future__ import annotations

import numpy as np

from jaxrec.data import events as ev

# One token as stored on disk: each user's record is a contiguous run of these structs.
TOKEN_DTYPE = np.dtype([
    ("item", np.int32),       # item id (vocabulary id)
    ("timestamp", np.int64),  # Unix seconds of the token's first event
    ("event", np.int32),      # strongest EventType among the merged events
    ("actions", np.int32),    # bitmask: bit t set when an event of type t was merged in
    ("count", np.int32),      # number of raw events merged
    ("value", np.float32),    # summed value: watch fraction, rating
    ("device", np.int32),     # device vocabulary id (0: unknown)
    ("locale", np.int32),     # locale vocabulary id (0: unknown)
    ("hour", np.int32),       # 1..24 (hour of day, UTC, plus one; 0 is padding)
    ("weekday", np.int32),    # 1..7, Monday is 1
    ("gap", np.int32),        # log2-bucketed seconds since the user's previous token, 1..NUM_GAP_BUCKETS-1
])
NUM_GAP_BUCKETS = 40
MERGE_GAP = 1800  # seconds: a user's events on one item this close merge into one token
NUM_HOURS = 25
NUM_WEEKDAYS = 8


def hour_of_day(seconds):
  """1..24: the UTC hour of day of Unix `seconds`, plus one (0 is padding)."""
  return (seconds // 3600) % 24 + 1


def weekday_of(seconds):
  """1..7, Monday is 1, of Unix `seconds` (0 is padding)."""
  return (seconds // 86400 + 3) % 7 + 1  # 1970-01-01 was a Thursday


def gap_bucket(seconds: np.ndarray) -> np.ndarray:
  """1 + floor(log2(1 + gap)): an hour and a day apart land in different buckets, a minute's
  jitter does not matter."""
  seconds = np.maximum(np.asarray(seconds, np.int64), 0)
  return np.minimum(1 + np.floor(np.log2(1.0 + seconds)).astype(np.int32), NUM_GAP_BUCKETS - 1)


def tokenize(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray, event_type: np.ndarray,
             value: np.ndarray, device: np.ndarray, locale: np.ndarray,
             merge_gap: int | None) -> tuple[np.ndarray, np.ndarray]:
  """Merges events sorted by (user, timestamp) into tokens (TOKEN_DTYPE, same order).

  Returns the tokens and each token's user.

  `merge_gap=None` turns merging off: every event becomes its own token.
  """
  n = len(user)
  starts = np.ones(n, bool)
  if merge_gap is not None and n > 1:
    same = (user[1:] == user[:-1]) & (item[1:] == item[:-1])
    starts[1:] = ~(same & (timestamp[1:] - timestamp[:-1] <= merge_gap))
  starts = np.flatnonzero(starts)

  tokens = np.zeros(len(starts), TOKEN_DTYPE)
  tokens["item"] = item[starts]
  tokens["timestamp"] = timestamp[starts]
  tokens["count"] = np.diff(np.append(starts, n))
  tokens["value"] = np.add.reduceat(value.astype(np.float32), starts) if n else 0
  event_type = event_type.astype(np.int32)
  # Strength first, type second: the max of the combined key picks the strongest type.
  key = ev.STRENGTH_TABLE[event_type] * 64 + event_type
  tokens["event"] = np.maximum.reduceat(key, starts) % 64 if n else 0
  tokens["actions"] = np.bitwise_or.reduceat(np.left_shift(1, event_type), starts) if n else 0
  tokens["device"] = device[starts]
  tokens["locale"] = locale[starts]
  ts = tokens["timestamp"]
  tokens["hour"] = hour_of_day(ts)
  tokens["weekday"] = weekday_of(ts)
  token_user = user[starts]
  gaps = np.zeros(len(starts), np.int64)
  if len(starts) > 1:
    gaps[1:] = np.where(token_user[1:] == token_user[:-1], ts[1:] - ts[:-1], 0)
  tokens["gap"] = gap_bucket(gaps)
  return tokens, token_user


def has_action(tokens: np.ndarray, event_type: ev.EventType) -> np.ndarray:
  return (tokens["actions"] >> int(event_type)) & 1 == 1
