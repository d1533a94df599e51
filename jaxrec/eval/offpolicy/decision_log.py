"""The serving job's decision log (`jaxrec serve --decision-log DIR`): its format, the writer the
service appends with (DecisionLog) and the reader that turns it into a SlateLog.

DIR/decisions.jsonl: one JSON object per answered /v1/recommend request,
  {"request_id": str, "user_id": str or null, "time": unix seconds, "model_version": str,
   "items": [raw item ids, slot order], "stage": [what placed each item],
   "propensity": [probability that each item was in the list]}
DIR/feedback.jsonl: one JSON object per /v1/feedback event that names its request,
  {"request_id": str, "item_id": str, "impressions": int, "engagements": int, "time": seconds}

Several server processes may append to the same files: each record is one line.

Serving's propensity is the probability that the item was in the list at all (1 for items the
deterministic ranking placed, the Thompson-sampling estimate for explored ones: see
rerank/exploration.py), so it becomes the SlateLog's `inclusion_propensity` and the log is read
by slate_estimators.topk_ips. A slot's reward is the engagements reported for that item of that
request (0 when no feedback named it).
"""

from __future__ import annotations

import collections
import json
import os

import numpy as np

from jaxrec.errors import UserError
from jaxrec.eval.offpolicy.slate_estimators import SlateLog

DECISIONS = "decisions.jsonl"
FEEDBACK = "feedback.jsonl"


def _records(path: str):
  if not os.path.exists(path):
    return
  with open(path) as f:
    lines = f.readlines()
  for number, line in enumerate(lines, 1):
    if not line.strip():
      continue
    try:
      yield json.loads(line)
    except json.JSONDecodeError as e:
      if number == len(lines) and not line.endswith("\n"):
        return  # a server killed mid-write leaves a partial last line: it was never answered
      raise UserError(f"{path}:{number} is not a JSON record ({e}); delete that line.") from e


def read_decision_log(path: str, length: int | None = None) -> tuple[SlateLog, dict]:
  """(SlateLog of the logged slates of `length` items, default the commonest length; a dict of
  `request_ids`, `user_ids`, `times` [n] and `item_ids` (the raw ids that the log's item indices
  name),
  `left_out` (slates of other lengths))."""
  decisions_path = os.path.join(path, DECISIONS)
  if not os.path.exists(decisions_path):
    raise UserError(f"{path} has no {DECISIONS}: it is not a decision log. Start the server with "
                    f"`jaxrec serve --export DIR --decision-log {path}`.")
  decisions = list(_records(decisions_path))
  if not decisions:
    raise UserError(f"{decisions_path} has no decisions yet: serve some requests first.")
  lengths = collections.Counter(len(d["items"]) for d in decisions)
  length = lengths.most_common(1)[0][0] if length is None else length
  kept = [d for d in decisions if len(d["items"]) == length]
  if not kept:
    raise UserError(f"no logged slate has {length} items; lengths in the log: "
                    f"{dict(sorted(lengths.items()))}.")
  engagements = collections.defaultdict(int)
  for event in _records(os.path.join(path, FEEDBACK)):
    engagements[event["request_id"], event["item_id"]] += int(event["engagements"])

  item_ids, slate = np.unique(np.array([d["items"] for d in kept], dtype=str),
                              return_inverse=True)
  user_ids = [d["user_id"] for d in kept]
  _, context = np.unique(np.array([str(u) for u in user_ids]), return_inverse=True)
  reward = [[engagements.get((d["request_id"], item), 0) for item in d["items"]] for d in kept]
  log = SlateLog(context=context.ravel(), slate=slate.reshape(len(kept), length), reward=reward,
                 inclusion_propensity=[d["propensity"] for d in kept])
  return log, {"request_ids": [d["request_id"] for d in kept], "user_ids": user_ids,
               "times": [d["time"] for d in kept],
               "item_ids": item_ids, "left_out": len(decisions) - len(kept)}


class DecisionLog:
  """Appends the service's decisions and the feedback that names them to DIR, for off-policy
  evaluation."""

  def __init__(self, directory: str):
    os.makedirs(directory, exist_ok=True)
    # Line-buffered appends: each record is flushed as it is written (a crash loses at most the
    # line being written), and processes sharing the directory append whole lines.
    self._decisions = open(os.path.join(directory, DECISIONS), "a", buffering=1)
    self._feedback = open(os.path.join(directory, FEEDBACK), "a", buffering=1)

  def decision(self, request_id: str, user_id: str | None, response: dict, now: float) -> None:
    """Logs one answered request under the request id that its feedback quotes."""
    items = response["items"]
    self._decisions.write(json.dumps({
        "request_id": request_id, "user_id": user_id, "time": now,
        "model_version": response["model_version"], "items": [i["item_id"] for i in items],
        "stage": [i["stage"] for i in items], "propensity": [i["propensity"] for i in items],
    }) + "\n")

  def feedback(self, events, now: float) -> None:
    """Logs feedback events (each quotes the request_id of the answer that showed its item)."""
    for e in events:
      self._feedback.write(json.dumps({
          "request_id": e.request_id, "item_id": e.item_id, "impressions": e.impressions,
          "engagements": e.engagements, "time": now}) + "\n")

  def close(self) -> None:
    self._decisions.close()
    self._feedback.close()
