import json

import numpy as np
import pytest

from jaxrec.data.synthetic import SyntheticConfig, generate
from jaxrec.data.events import EventType
from jaxrec.errors import UserError
from jaxrec.eval.offpolicy import estimators
from jaxrec.eval.simulation import dataset_world, days, policies
from jaxrec.eval.simulation.world import World, WorldConfig

CONFIG = SyntheticConfig(num_users=3000, num_items=1500, num_events=30_000, seed=3)


@pytest.fixture(scope="module")
def world():
  return World(CONFIG)


def best_and_random(world, requests, k, rng):
  scores = world.taste(requests.users, requests.now) @ world.item_vec.T
  best = np.argsort(-scores, 1)[:, :k]
  return best, rng.integers(0, world.num_items, best.shape)


def test_world_is_seeded(world):
  other = World(CONFIG)
  np.testing.assert_array_equal(world.base, other.base)
  np.testing.assert_array_equal(world.clickbait, other.clickbait)
  policy = policies.SoftmaxPolicy(policies.OracleScorer(30), 0.2)
  runs = [days.run(w, policy, 3, k=5, seed=7, log=True) for w in (world, other)]
  assert runs[0][0] == runs[1][0]
  for name in runs[0][1]:
    np.testing.assert_array_equal(runs[0][1][name], runs[1][1][name])
  assert days.run(world, policy, 3, k=5, seed=8)[0] != runs[0][0]


def test_world_users_are_the_generators(world):
  """Users click the items the world says they like: the generated log's clicked impressions
  have a higher world affinity than the ignored ones."""
  events = generate(CONFIG).events
  impressions = events.event_type == EventType.IMPRESSION
  user, item, t = (np.asarray(x)[impressions] for x in (events.user, events.item, events.timestamp))
  clicked_keys = set(zip(np.asarray(events.user)[events.event_type == EventType.CLICK].tolist(),
                         np.asarray(events.item)[events.event_type == EventType.CLICK].tolist()))
  clicked = np.array([(u, i) in clicked_keys for u, i in zip(user.tolist(), item.tolist())])
  affinity = world.affinity(user, t, world.rank_of_id[item][:, None])[:, 0]
  assert affinity[clicked].mean() > affinity[~clicked].mean() + 0.1


def test_responses_follow_tastes(world):
  state, rng = world.reset(), np.random.default_rng(0)
  requests = world.requests(state)
  best, random = best_and_random(world, requests, 10, rng)
  good = world.respond(state, requests, best, np.random.default_rng(1))
  bad = world.respond(state, requests, random, np.random.default_rng(1))
  assert good.click.mean() > 2 * bad.click.mean()
  assert good.watch.sum() > 2 * bad.watch.sum()
  # Position bias: the first slot is examined more than the last.
  assert good.examined[:, 0].mean() > good.examined[:, -1].mean() + 0.3


def test_fatigue_lowers_repeated_response(world):
  state, rng = world.reset(), np.random.default_rng(0)
  requests = world.requests(state)
  best, _ = best_and_random(world, requests, 10, rng)
  fresh = world.respond(state, requests, best, np.random.default_rng(1))
  world.advance(state, requests, best, fresh, rng)
  state.active[:] = True  # the same users, the same slate on day 2
  again = world.respond(state, world.requests(state), best, np.random.default_rng(1))
  assert again.click.mean() < 0.6 * fresh.click.mean()


def test_genre_fatigue_without_repeated_items():
  world = World(CONFIG, WorldConfig(item_fatigue=0.0, rewatch=1.0))
  state, rng = world.reset(), np.random.default_rng(0)
  requests = world.requests(state)
  scores = world.taste(requests.users, requests.now) @ world.item_vec.T
  order = np.argsort(-scores, 1)
  first, second = order[:, :10], order[:, 10:20]  # different items, mostly the same genres
  day1 = world.respond(state, requests, first, rng)
  unread = world.respond(state, requests, second, np.random.default_rng(2))
  world.advance(state, requests, first, day1, rng)
  state.active[:] = True
  tired = world.respond(state, world.requests(state), second, np.random.default_rng(2))
  assert tired.click.mean() < unread.click.mean()


def test_retention_responds_to_satisfaction(world):
  rng = np.random.default_rng(0)
  kept = {}
  for name in ("best", "random"):
    state = world.reset()
    requests = world.requests(state)
    best, random = best_and_random(world, requests, 10, np.random.default_rng(5))
    slates = best if name == "best" else random
    responses = world.respond(state, requests, slates, rng)
    report = world.advance(state, requests, slates, responses, rng)
    kept[name] = state.active.mean()
    assert report["active_users"] == world.num_users
  assert kept["best"] > kept["random"] + 0.05


def test_clickbait_is_clicked_but_regretted(world):
  state, rng = world.reset(), np.random.default_rng(0)
  requests = world.requests(state)
  bait = np.flatnonzero(world.clickbait)
  honest = np.flatnonzero(~world.clickbait)
  a = world.respond(state, requests, rng.choice(bait, (len(requests.users), 1)), rng)
  b = world.respond(state, requests, rng.choice(honest, (len(requests.users), 1)), rng)
  assert a.click.mean() > b.click.mean()
  assert a.abandoned.sum() / a.click.sum() > 2 * b.abandoned.sum() / b.click.sum()


def test_plackett_luce_propensities(world):
  state = world.reset()
  requests = world.requests(state)
  policy = policies.SoftmaxPolicy(policies.OracleScorer(5), 0.1)
  candidates, probs = policy.probabilities(world, state, requests)
  np.testing.assert_allclose(probs.sum(1), 1.0)
  slates, propensity = policy.slates(world, state, requests, 5, np.random.default_rng(0))
  # Slot 0's propensity is the softmax share; the last slot has one candidate left.
  first = (candidates == slates[:, :1]).argmax(1)
  np.testing.assert_allclose(propensity[:, 0], probs[np.arange(len(probs)), first])
  np.testing.assert_allclose(propensity[:, -1], 1.0)
  # Empirical frequency of the top candidate in slot 0 matches its mean probability.
  assert abs((first == 0).mean() - probs[:, 0].mean()) < 0.03


def test_ips_on_a_simulated_log_is_unbiased(world):
  """A softmax logging policy's one-slot log; the greedy target's true click rate (run in the
  world on the same day-1 contexts) lies in IPS's 95% interval."""
  state = world.reset()
  requests = world.requests(state)
  scorer = policies.OracleScorer(10)
  logging = policies.SoftmaxPolicy(scorer, 0.1)
  rng = np.random.default_rng(0)
  slates, propensity = logging.slates(world, state, requests, 1, rng)
  reward = world.respond(state, requests, slates, rng).click[:, 0]
  target = policies.GreedyPolicy(scorer)
  candidates, probs = target.probabilities(world, state, requests)
  target_probs = (probs * (candidates == slates)).sum(1)
  log = estimators.BanditLog(requests.users, slates[:, 0], reward, propensity[:, 0])
  estimate = estimators.ips(log, target_probs, n_boot=300)
  greedy, _ = target.slates(world, state, requests, 1, rng)
  truth = np.mean([world.respond(state, requests, greedy, rng).click.mean() for _ in range(20)])
  assert estimate.ci_low <= truth <= estimate.ci_high
  assert estimate.ci_high - estimate.ci_low < 0.15


def test_bad_inputs(world):
  with pytest.raises(UserError, match="users must be"):
    World(CONFIG, users=CONFIG.num_users + 1)
  with pytest.raises(UserError, match="days must be"):
    days.run(world, policies.GreedyPolicy(policies.OracleScorer(5)), 0)
  with pytest.raises(UserError, match="temperature"):
    policies.SoftmaxPolicy(policies.OracleScorer(5), 0)
  state = world.reset()
  with pytest.raises(UserError, match="one slate each"):
    world.respond(state, world.requests(state), np.zeros((2, 3), int), np.random.default_rng())
  with pytest.raises(UserError, match="WorldConfig.base_return"):
    World(CONFIG, WorldConfig(base_return=1.0))


def test_synthetic_config_of_a_prepared_dataset(tmp_path):
  from jaxrec.data.storage import FORMAT_VERSION
  def dataset(name, **extra):
    path = tmp_path / name
    path.mkdir()
    (path / "manifest.json").write_text(json.dumps(
        {"format_version": FORMAT_VERSION, "dataset": name, **extra}))
    return str(path)
  recorded = dataset("synthetic", source_config={"num_users": 7, "seed": 2})
  assert dataset_world.synthetic_config_of(recorded) == SyntheticConfig(num_users=7, seed=2)
  old = dataset("old", dataset="synthetic")  # prepared before the config was recorded
  model = {"data": {"dataset": "synthetic", "synthetic": {"num_items": 9}}}
  assert dataset_world.synthetic_config_of(old, model) == SyntheticConfig(num_items=9)
  with pytest.raises(UserError, match="does not record the synthetic config"):
    dataset_world.synthetic_config_of(old, {"data": {"dataset": "movielens-100k"}})
  with pytest.raises(UserError, match="prepared with `--dataset synthetic`"):
    dataset_world.synthetic_config_of(dataset("movielens-100k"))
  with pytest.raises(UserError, match="different synthetic world"):
    dataset_world.check_same_world(SyntheticConfig(seed=1), SyntheticConfig(seed=2), "--policy X")
