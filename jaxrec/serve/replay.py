"""A bundle's serving pipeline replayed on the serving job's decision log
(jaxrec/eval/offpolicy/decision_log.py): what `jaxrec ope --logs DIR` estimates for a target bundle
from what the service logged."""

from __future__ import annotations

import os

import numpy as np

from jaxrec.errors import UserError
from jaxrec.eval.offpolicy import estimators
from jaxrec.eval.offpolicy.decision_log import read_decision_log
from jaxrec.eval.offpolicy.slate_estimators import SlateLog, topk_ips, topk_membership
from jaxrec.rerank.pipeline import RerankConfig
from jaxrec.rerank.posteriors import BetaPosteriors
from jaxrec.retrieval.bundle import latest_version
from jaxrec.serve.recommender import BUCKETS, Recommender, Request, ServingConfig


def replay_target(log: SlateLog, meta: dict, policy: str, *, mmr_lambda: float = 0.7,
                  candidates: int = 1000) -> np.ndarray:
  """[n, L] target inclusion of each logged item: 1 where the target bundle's serving pipeline,
  replayed deterministically (no exploration or freshness slots) on the logged request — same
  user, same time, same list length — puts that item in its list, else 0.

  The log keeps the user and the time, not a request's filters, exclusions or carried history,
  so those are replayed without them; a request without a user id is replayed as a cold start.
  """
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
  log, meta = read_decision_log(path)
  inclusion = replay_target(log, meta, policy, mmr_lambda=mmr_lambda, candidates=candidates)
  estimates = {"topk_ips": topk_ips(log, inclusion, n_boot=n_boot, seed=seed)}
  return estimators.report(
      estimates, out, logs=os.path.abspath(path),
      logging_policy="the serving job (its decision log)",
      target_policy=f"{policy}: serving pipeline, MMR lambda={mmr_lambda:g}, no exploration",
      reward=f"engagements summed over a {log.slate.shape[1]}-item list", slates=len(log),
      left_out=meta["left_out"])
