import json
import os

import numpy as np
import pytest

from jaxrec.errors import UserError
from jaxrec.eval.offpolicy.decision_log import DECISIONS, FEEDBACK, read_decision_log


def _write(directory, name, records, tail=""):
  with open(os.path.join(directory, name), "w") as f:
    f.writelines(json.dumps(r) + "\n" for r in records)
    f.write(tail)


def _decision(request_id, user, items, propensity):
  return {"request_id": request_id, "user_id": user, "time": 1.0, "model_version": "1",
          "items": items, "stage": ["ranking"] * len(items), "propensity": propensity}


def test_slates_and_feedback_join_by_request(tmp_path):
  _write(tmp_path, DECISIONS, [
      _decision("a", "u1", ["i9", "i3"], [1.0, 0.25]),
      _decision("b", "u2", ["i3", "i5"], [1.0, 1.0]),
      _decision("c", "u1", ["i5"], [1.0]),                   # another length: left out
  ])
  _write(tmp_path, FEEDBACK, [
      {"request_id": "a", "item_id": "i3", "impressions": 1, "engagements": 1, "time": 2.0},
      {"request_id": "a", "item_id": "i3", "impressions": 1, "engagements": 1, "time": 3.0},
      {"request_id": "b", "item_id": "i9", "impressions": 1, "engagements": 1, "time": 2.0},
  ])
  log, meta = read_decision_log(str(tmp_path))
  assert meta["left_out"] == 1 and meta["request_ids"] == ["a", "b"]
  # Items are indices into meta["item_ids"] (sorted raw ids i3, i5, i9).
  np.testing.assert_array_equal(meta["item_ids"][log.slate], [["i9", "i3"], ["i3", "i5"]])
  np.testing.assert_array_equal(log.context, [0, 1])
  # Request a's i3 was engaged twice; b never showed i9, so that event joins nothing.
  np.testing.assert_array_equal(log.reward, [[0, 2], [0, 0]])
  np.testing.assert_array_equal(log.inclusion_propensity, [[1.0, 0.25], [1.0, 1.0]])
  assert log.propensity is None
  assert read_decision_log(str(tmp_path), length=1)[0].slate.shape == (1, 1)


def test_errors_say_what_to_do(tmp_path):
  with pytest.raises(UserError, match="--decision-log"):
    read_decision_log(str(tmp_path))
  # A partial last line (a server killed mid-write) is skipped; a broken line before it is not.
  _write(tmp_path, DECISIONS, [_decision("a", "u1", ["i9"], [1.0])], tail='{"request_id": "b", ')
  assert read_decision_log(str(tmp_path))[1]["request_ids"] == ["a"]
  _write(tmp_path, DECISIONS, [_decision("a", "u1", ["i9"], [1.0])],
         tail='{"request_id": "b", \n' + json.dumps(_decision("c", "u1", ["i9"], [1.0])) + "\n")
  with pytest.raises(UserError, match=f"{DECISIONS}:2 is not a JSON record"):
    read_decision_log(str(tmp_path))
  _write(tmp_path, DECISIONS, [_decision("a", "u1", ["i9"], [0.0])])
  with pytest.raises(UserError, match="inclusion_propensity"):
    read_decision_log(str(tmp_path))
  _write(tmp_path, DECISIONS, [_decision("a", "u1", ["i9"], [1.0])])
  with pytest.raises(UserError, match="no logged slate has 3 items"):
    read_decision_log(str(tmp_path), length=3)
