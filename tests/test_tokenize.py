import numpy as np

from jaxrec.data.events import EventType as E
from jaxrec.data.tokenize import gap_bucket, has_action, tokenize


def _events(rows):
  user, item, ts, kind, value = (np.array(c) for c in zip(*rows))
  zeros = np.zeros(len(rows), np.int32)
  return dict(user=user, item=item, timestamp=ts.astype(np.int64), event_type=kind.astype(np.int8),
              value=value.astype(np.float32), device=zeros + 3, locale=zeros + 4)


ROWS = [  # user, item, time, event, value: sorted by (user, time)
    (2, 10, 1000, E.IMPRESSION, 0), (2, 10, 1005, E.CLICK, 0), (2, 10, 1010, E.PLAY, 0.3),
    (2, 10, 1400, E.PAUSE, 0.2), (2, 10, 1500, E.LIKE, 0),
    (2, 10, 9000, E.PLAY, 0.5),      # same item, hours later: a new token
    (2, 11, 9100, E.IMPRESSION, 0),  # another item: a new token
    (3, 11, 9200, E.IMPRESSION, 0),  # another user: a new token
]


def test_consecutive_events_on_one_item_merge_into_one_token():
  tokens, users = tokenize(**_events(ROWS), merge_gap=1800)
  assert len(tokens) == 4
  assert users.tolist() == [2, 2, 2, 3]
  first = tokens[0]
  assert first["item"] == 10 and first["timestamp"] == 1000 and first["count"] == 5
  assert np.isclose(first["value"], 0.5)  # watch fractions add up
  assert first["event"] == E.LIKE  # the strongest action
  assert all(has_action(tokens[:1], t)[0] for t in (E.IMPRESSION, E.CLICK, E.PLAY, E.PAUSE, E.LIKE))
  assert not has_action(tokens[:1], E.SHARE)[0]
  assert tokens["count"].tolist() == [5, 1, 1, 1]
  assert tokens["device"].tolist() == [3] * 4 and tokens["locale"].tolist() == [4] * 4


def test_merge_gap_and_turning_merging_off():
  tokens, _ = tokenize(**_events(ROWS), merge_gap=None)
  assert len(tokens) == len(ROWS)
  tokens, _ = tokenize(**_events(ROWS), merge_gap=100)  # 1010 -> 1400 is 390 s: split there
  assert tokens["count"].tolist()[:2] == [3, 2]


def test_time_features():
  tokens, _ = tokenize(**_events(ROWS), merge_gap=1800)
  assert tokens["hour"][0] == 1  # 1000 s after the epoch: hour 0, stored as 1
  assert tokens["weekday"][0] == 4  # 1970-01-01 was a Thursday
  assert tokens["gap"][0] == 1  # first token of a user
  assert tokens["gap"][1] == gap_bucket(np.array([8000]))[0]
  assert tokens["gap"][3] == 1  # first token of the next user
  assert gap_bucket(np.array([0, 1, 60, 3600, 86400])).tolist() == [1, 2, 6, 12, 17]
