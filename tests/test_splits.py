import numpy as np
import pytest

from jaxrec.data.splits import leave_one_out, temporal
from jaxrec.errors import UserError


def test_leave_one_out_holds_out_the_last_two_tokens():
  s = leave_one_out(np.array([5, 3, 2, 1]))
  assert s.train_end.tolist() == [3, 1, 2, 1]
  assert s.valid_end.tolist() == [4, 2, 2, 1]
  assert s.counts() == {"train": 7, "valid": 2, "test": 2}


def test_temporal_split_by_quantiles_and_by_timestamps():
  # user 0: t = 1..6, user 1: t = 4..9
  ts = np.array([1, 2, 3, 4, 5, 6, 4, 5, 6, 7, 8, 9])
  offsets = np.array([0, 6, 12])
  s = temporal(ts, offsets, 5, 7)
  assert s.train_end.tolist() == [4, 1]
  assert s.valid_end.tolist() == [6, 3]
  assert s.description == {"kind": "temporal", "t1": 5, "t2": 7}
  q = temporal(ts, offsets, 0.5, 0.75)
  assert q.description["t1"] == int(np.quantile(ts, 0.5))
  with pytest.raises(UserError, match="t1 < t2"):
    temporal(ts, offsets, 7, 5)


def test_prepared_temporal_split_never_trains_on_the_future(ml100k_raw, tmp_path):
  from jaxrec.data.prepare import PrepareOptions, prepare
  ds = prepare(ml100k_raw, str(tmp_path / "t"), PrepareOptions(split="temporal"))
  t1, t2 = ds.manifest["split"]["t1"], ds.manifest["split"]["t2"]
  s = ds.splits
  for user in range(2, 2 + ds.num_users, 37):
    tokens = ds.user_tokens([user])[0]
    r = user - 2
    assert np.all(tokens["timestamp"][:s.train_end[r]] < t1)
    assert np.all((tokens["timestamp"][s.train_end[r]:s.valid_end[r]] >= t1)
                  & (tokens["timestamp"][s.train_end[r]:s.valid_end[r]] < t2))
    assert np.all(tokens["timestamp"][s.valid_end[r]:] >= t2)
  counts = ds.stats["split_tokens"]
  assert counts["train"] > counts["valid"] > 0 and counts["test"] > 0
