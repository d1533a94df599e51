"""The serving job's decision log (`jaxrec serve --decision-log DIR`), read back as a SlateLog.

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
by slate_ope.topk_ips. A slot's reward is the engagements reported for that item of that request
(0 when no feedback named it).
"""

from __future__ import annotations

import collections
import json
import os

import numpy as np

from jaxrec.errors import UserError
from jaxrec.eval.slate_ope import SlateLog, topk_ips, topk_membership

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


def replay_target(log: SlateLog, meta: dict, policy: str, *, mmr_lambda: float = 0.7,
                  candidates: int = 1000) -> np.ndarray:
  """[n, L] target inclusion of each logged item: 1 where the target bundle's serving pipeline,
  replayed deterministically (no exploration or freshness slots) on the logged request — same
  user, same time, same list length — puts that item in its list, else 0.

  The log keeps the user and the time, not a request's filters, exclusions or carried history,
  so those are replayed without them; a request without a user id is replayed as a cold start.
  """
  from jaxrec.rerank.pipeline import RerankConfig
  from jaxrec.rerank.posteriors import BetaPosteriors
  from jaxrec.retrieval.bundle import latest_version
  from serving.recommender import BUCKETS, Recommender, Request, ServingConfig
  if not os.path.isdir(policy):
    raise UserError(f"--policy {policy} does not exist; pass an export bundle or export root "
                    "(`jaxrec export --workdir TWO_TOWER --ranker DLRM --out DIR`).")
  if not os.path.exists(os.path.join(policy, "manifest.json")):
    policy = latest_version(policy)
  config = ServingConfig(candidates=candidates, rerank=RerankConfig(
      mmr_lambda=mmr_lambda, freshness_slots=0, explore_slots=0))
  recommender = Recommender(policy, config, BetaPosteriors(0))
  length = log.slate.shape[1]
  requests = [Request(user_id=user, k=length, now=int(t))
              for user, t in zip(meta["user_ids"], meta["times"])]
  index = {item: i for i, item in enumerate(meta["item_ids"])}
  lists = np.full((len(log), length), -1)
  for lo in range(0, len(requests), BUCKETS[-1]):
    for row, answer in enumerate(recommender.recommend(requests[lo:lo + BUCKETS[-1]]), lo):
      ids = [index.get(x["item_id"], -1) for x in answer["items"]]
      lists[row, :len(ids)] = ids
  return topk_membership(log, lists, length)


def evaluate(path: str, policy: str, out: str | None = None, *, mmr_lambda: float = 0.7,
             candidates: int = 1000, n_boot: int = 1000, seed: int = 0) -> dict:
  """`jaxrec ope --logs DIR` on a serving decision log: the target bundle's list value (sum of
  engagements over its list) estimated by rank-independent top-k IPS over serving's inclusion
  propensities."""
  from jaxrec.eval import ope
  log, meta = read_decision_log(path)
  inclusion = replay_target(log, meta, policy, mmr_lambda=mmr_lambda, candidates=candidates)
  estimates = {"topk_ips": topk_ips(log, inclusion, n_boot=n_boot, seed=seed)}
  return ope.report(
      estimates, out, logs=os.path.abspath(path),
      logging_policy="the serving job (its decision log)", target_policy=f"{policy}: serving pipeline, MMR lambda={mmr_lambda:g}, no exploration",
      reward=f"engagements summed over a {log.slate.shape[1]}-item list", slates=len(log),
      left_out=meta["left_out"])
