"""The foundation model as the serving job's query encoder: a real server over a bundle exported
from a tiny foundation run on MovieLens-100K answers like the workdir does offline."""

import httpx
import jax
import numpy as np
import pytest
from flax import nnx

from jaxrec.config import apply_overrides, load_config
from jaxrec.data.tokenize import TOKEN_DTYPE
from jaxrec.models.event_tokens import TOKEN_FIELDS
from jaxrec.rerank.config import RerankConfig
from jaxrec.rerank.posteriors import BetaPosteriors
from jaxrec.train.export import export_workdir
from jaxrec.train.restore import restore_model
from jaxrec.train.trainer import train
from serving.app import create_app
from jaxrec.serve.recommender import Recommender, Request, ServingConfig
from test_serving import Server  # the real uvicorn server on a free port

# A real server over its own foundation and DLRM runs (30 steps each): minutes.
pytestmark = [pytest.mark.integration, pytest.mark.slow]

K = 10
# Pure score order: no MMR, freshness or exploration slots, so the served list is the ranking.
PLAIN = ServingConfig(candidates=100, rerank=RerankConfig(mmr_lambda=1.0))


@pytest.fixture(scope="module")
def workdirs(ml100k, tmp_path_factory):
  tmp = tmp_path_factory.mktemp("serving_foundation")
  steps = ("train.num_steps=30", "train.eval_every=30")
  train(apply_overrides(load_config("configs/movielens_foundation.py:smoke"),
                        [f"data.dir={ml100k.path}", *steps]), str(tmp / "foundation"))
  return tmp


@pytest.fixture(scope="module")
def offline(workdirs):
  """The workdir's own model: item vectors and a jitted query_vectors."""
  run = restore_model(str(workdirs / "foundation"))
  model = nnx.merge(run.graphdef, run.state)
  items = np.asarray(run.task.item_vectors(model))
  query = jax.jit(run.task.query_vectors)
  return run.task, items, lambda batch: np.asarray(query(model, batch))


@pytest.fixture(scope="module")
def server(workdirs):
  root = str(workdirs / "export")
  export_workdir(str(workdirs / "foundation"), root, exact=True)
  with Server(create_app(root, PLAIN, reload_interval=60)) as server:
    yield server


def latest_window(tokens: np.ndarray, max_len: int) -> dict:
  """A user's most recent max_len tokens, every field, left-padded: written out here rather
  than through the library, so the served query is checked against an independent layout."""
  recent = tokens[-max_len:]
  batch = {name: np.zeros((1, max_len), TOKEN_DTYPE[name]) for name in TOKEN_FIELDS}
  batch["inputs"] = np.zeros((1, max_len), np.int32)
  batch["inputs"][0, max_len - len(recent):] = recent["item"]
  for name in TOKEN_FIELDS:
    batch[name][0, max_len - len(recent):] = recent[name]
  return batch


def offline_top_k(offline, tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
  """Exact top-k over every item, the user's items, padding and OOV excluded."""
  task, items, query = offline
  scores = query(latest_window(tokens, task.config.model.max_len))[0] @ items.T
  scores[:2] = -np.inf
  scores[tokens["item"]] = -np.inf
  top = np.argsort(-scores, kind="stable")[:K]
  return top, scores[top]


def recommend(server, body):
  response = httpx.post(server.url + "/v1/recommend", json=body, timeout=60)
  assert response.status_code == 200, response.text
  return response.json()


def test_known_users_get_the_workdirs_offline_top_k(server, offline, ml100k):
  items = ml100k.vocabs["item"]
  for user in (2, 17, 150, 600, 944):  # vocabulary ids: short and long histories
    tokens = ml100k.user_tokens([user])[0]
    raw_user = str(ml100k.vocabs["user"].raw(np.array([user]))[0])
    answer = recommend(server, {"user_id": raw_user, "k": K})
    assert not answer["cold_start"]
    want, want_scores = offline_top_k(offline, tokens)
    assert [x["item_id"] for x in answer["items"]] == list(items.raw(want).astype(str)), user
    np.testing.assert_allclose([x["score"] for x in answer["items"]], want_scores, rtol=1e-4,
                               atol=1e-4)
    assert all(x["stage"] == "ranking" and set(x["heads"]) == {"retrieval"}
               for x in answer["items"])


def test_carried_history_extends_the_query(server, offline, ml100k):
  user = 17
  tokens = ml100k.user_tokens([user])[0]
  raw = lambda ids: ml100k.vocabs["item"].raw(np.asarray(ids)).astype(str)
  # An anonymous request carrying the user's items and times is no longer cold, and its query
  # reads them: it differs from the empty history's popular list and excludes the carried items.
  history = [{"item_id": i, "timestamp": int(t)} for i, t in zip(raw(tokens["item"]),
                                                                   tokens["timestamp"])]
  answer = recommend(server, {"history": history, "k": K})
  cold = recommend(server, {"k": K})
  assert not answer["cold_start"] and cold["cold_start"]
  served = [x["item_id"] for x in answer["items"]]
  assert len(served) == K and not set(served) & set(raw(tokens["item"]))
  assert served != [x["item_id"] for x in cold["items"]]
  # A known user with carried items: the newest of them now sits at the end of the query window.
  extra = [{"item_id": str(i), "timestamp": int(tokens["timestamp"][-1]) + 60 * (n + 1)}
           for n, i in enumerate(raw(offline_top_k(offline, tokens)[0][:3]))]
  raw_user = str(ml100k.vocabs["user"].raw(np.array([user]))[0])
  extended = recommend(server, {"user_id": raw_user, "history": extra, "k": K})
  assert not {x["item_id"] for x in extended["items"]} & {x["item_id"] for x in extra}


def test_unknown_user_takes_the_cold_start_path(server, ml100k):
  answer = recommend(server, {"user_id": "nobody", "k": K})
  assert answer["cold_start"]
  popular = np.argsort(-ml100k.item_counts, kind="stable")[:K]
  assert [x["item_id"] for x in answer["items"]] == \
      list(ml100k.vocabs["item"].raw(popular).astype(str))
  assert all(x["stage"] == "popular" for x in answer["items"])


def test_carried_items_become_tokens_like_the_tokenizers(server, ml100k):
  """Carrying a user's last events in the request instead of storing them gives the same
  derived fields (hour, weekday, gap, count) the tokenizer wrote."""
  # The served model lives in its own process: the same bundle loaded here.
  recommender = Recommender(server.service.current.path, PLAIN, BetaPosteriors(0))
  tokens = ml100k.user_tokens([40])[0]
  merged = recommender._with_carried(tokens[:-3], tokens["item"][-3:], tokens["timestamp"][-3:],
                                     None)
  for name in ("item", "timestamp", "hour", "weekday", "gap", "count"):
    np.testing.assert_array_equal(merged[name], tokens[name], err_msg=name)


def test_serving_and_evaluation_share_the_window_layout(offline, ml100k):
  """The evaluation pipeline's test windows are history_batch of each history before the split."""
  task = offline[0]
  batch = next(iter(task.eval_batches("test")))
  users = batch["user"][:8]
  lo = ml100k.splits.valid_end[users - 2]
  served = task.history_batch([t[:n] for t, n in zip(ml100k.user_tokens(users), lo)], users)
  assert set(served) == {"inputs", "user", *TOKEN_FIELDS}
  for name, value in served.items():
    np.testing.assert_array_equal(value, batch[name][:8], err_msg=name)


def test_with_a_dlrm_ranker(workdirs, ml100k, smoke_dlrm, tmp_path):
  # The ranker: conftest's DLRM smoke run on the same MovieLens-100K, shared with other modules.
  path, _ = export_workdir(str(workdirs / "foundation"), str(tmp_path / "export"),
                           ranker=smoke_dlrm[0])
  recommender = Recommender(path, ServingConfig(candidates=50), BetaPosteriors(0))
  raw_user = str(ml100k.vocabs["user"].raw(np.array([17]))[0])
  answers = recommender.recommend([Request(user_id=raw_user, k=K), Request(user_id="x", k=K)])
  assert [len(a["items"]) for a in answers] == [K, K]
  assert set(answers[0]["items"][0]["heads"]) == set(recommender.ranker.task.heads)
  assert {"query", "retrieval", "ranking", "rerank"} <= set(answers[0]["timings_ms"])
  assert answers[1]["cold_start"] and not answers[0]["cold_start"]
