"""Appends the service's decisions and the feedback that names them to a decision log (the
format, and its reader, are in jaxrec/eval/decision_log.py), for off-policy evaluation."""

from __future__ import annotations

import json
import os
import uuid

from jaxrec.eval.decision_log import DECISIONS, FEEDBACK


class DecisionLog:
  def __init__(self, directory: str):
    os.makedirs(directory, exist_ok=True)
    # Line-buffered appends: each record is flushed as it is written (a crash loses at most the
    # line being written), and processes sharing the directory append whole lines.
    self._decisions = open(os.path.join(directory, DECISIONS), "a", buffering=1)
    self._feedback = open(os.path.join(directory, FEEDBACK), "a", buffering=1)

  def decision(self, user_id: str | None, response: dict, now: float) -> str:
    """Logs one answered request; returns the request id that feedback quotes."""
    request_id = uuid.uuid4().hex
    items = response["items"]
    self._decisions.write(json.dumps({
        "request_id": request_id, "user_id": user_id, "time": now,
        "model_version": response["model_version"], "items": [i["item_id"] for i in items],
        "stage": [i["stage"] for i in items], "propensity": [i["propensity"] for i in items],
    }) + "\n")
    return request_id

  def feedback(self, events, now: float) -> None:
    """Logs the events that carry a request_id (others only update the posteriors)."""
    for e in events:
      if e.request_id is not None:
        self._feedback.write(json.dumps({
            "request_id": e.request_id, "item_id": e.item_id, "impressions": e.impressions,
            "engagements": e.engagements, "time": now}) + "\n")

  def close(self) -> None:
    self._decisions.close()
    self._feedback.close()
