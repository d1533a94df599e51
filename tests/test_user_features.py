"""The foundation model's user embedding as a DLRM feature (model.user_embedding_from): the
switch adds the input, no event at or after an example's time reaches its feature, a bad source
is refused, and an exported bundle serves the same feature."""

import json
import os

import numpy as np
import pytest
from flax import nnx

from jaxrec.config import apply_overrides, load_config
from jaxrec.data.prepare import PrepareOptions, prepare
from jaxrec.data.sources import load_raw
from jaxrec.errors import UserError
from jaxrec.rerank.posteriors import BetaPosteriors
from jaxrec.train.export import export_workdir
from jaxrec.train.trainer import build_task, train
from jaxrec.train.user_features import UserEncoder
from jaxrec.serve.recommender import Recommender, Request, ServingConfig

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name, prepared, *overrides):
  return apply_overrides(load_config(os.path.join(ROOT, "configs", f"{name}.py:smoke")),
                         [f"data.dir={prepared}", *overrides])


@pytest.fixture(scope="module")
def encoder_workdir(ml100k, tmp_path_factory):
  workdir = str(tmp_path_factory.mktemp("foundation"))
  train(_config("movielens_foundation", ml100k.path, "train.num_steps=3", "train.eval_every=3"),
        workdir)
  return workdir


@pytest.fixture(scope="module")
def ranker(ml100k, encoder_workdir):
  return build_task(_config("movielens_dlrm", ml100k.path,
                            f"model.user_embedding_from={encoder_workdir}"))


@pytest.mark.slow
def test_the_switch_adds_the_user_vector_to_the_models_inputs(ml100k, ranker):
  plain = build_task(_config("movielens_dlrm", ml100k.path))
  assert plain.spec.user_embedding_dim == 0
  assert "user_embedding" not in next(iter(plain.train_data(0)))
  batch = next(iter(ranker.train_data(0)))
  dim = ranker.user_encoder_config.model.dim
  assert ranker.spec.user_embedding_dim == dim and batch["user_embedding"].shape == (100, dim)
  # A token's sampled negatives share its user and time, so its feature.
  groups = batch["user_embedding"].reshape(20, 5, dim)
  np.testing.assert_array_equal(groups, np.repeat(groups[:, :1], 5, 1))
  with nnx.use_eager_sharding(False):
    model = ranker.build_model(nnx.Rngs(0))
  before = np.asarray(ranker.predictions(model, batch))
  batch["user_embedding"] = batch["user_embedding"] + 1.0
  assert np.abs(np.asarray(ranker.predictions(model, batch)) - before).max() > 1e-4


@pytest.fixture(scope="module")
def request_gap_ranker(ml100k, tmp_path_factory):
  """A ranker whose encoder reads the request's time (model.request_gap)."""
  workdir = str(tmp_path_factory.mktemp("foundation_request_gap"))
  train(_config("movielens_foundation", ml100k.path, "train.num_steps=3", "train.eval_every=3",
                "model.request_gap=True"), workdir)
  return build_task(_config("movielens_dlrm", ml100k.path,
                            f"model.user_embedding_from={workdir}"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["ranker", "request_gap_ranker"])
def test_no_event_at_or_after_an_examples_time_reaches_its_feature(ml100k, name, request):
  """An example's feature is the encoder over the events before it, requested at its time."""
  ranker = request.getfixturevalue(name)
  vectors = ranker.history_vectors()
  record = int(np.argmax([len(t) for t in vectors.times]))
  tokens = ml100k.user_tokens([record + 2])[0]
  position = len(tokens) // 2
  t = int(tokens["timestamp"][position])
  table = vectors(np.array([t]), np.array([record]))[0]
  # Served from the stored history, as serving computes it at request time `t`.
  encoder = UserEncoder.from_workdir(ranker.user_encoder_dir)
  served = encoder.before([tokens], [record + 2], [t])[0]
  np.testing.assert_allclose(served, table, atol=1e-5)
  # Every token at or after t rewritten (other items, other actions) and more events appended:
  # the feature at t does not move.
  rng = np.random.default_rng(0)
  later = tokens["timestamp"] >= t
  altered = tokens.copy()
  altered["item"][later] = rng.integers(2, ml100k.num_items, later.sum())
  altered["value"][later] = 1.0
  extra = altered[-5:].copy()
  extra["timestamp"] += 86400
  altered = np.concatenate([altered, extra])
  np.testing.assert_allclose(encoder.before([altered], [record + 2], [t])[0], table, atol=1e-5)
  # The tokens before t do reach it.
  earlier = tokens.copy()
  earlier["item"][~later] = rng.integers(2, ml100k.num_items, (~later).sum())
  assert np.abs(encoder.before([earlier], [record + 2], [t])[0] - table).max() > 1e-4


def _fake_run(path, **config):
  os.makedirs(path)
  with open(os.path.join(path, "config.json"), "w") as f:
    json.dump(config, f)
  return path


def test_a_bad_source_is_refused(ml100k, ml100k_raw, tmp_path):
  build = lambda source: build_task(_config("movielens_dlrm", ml100k.path,
                                            f"model.user_embedding_from={source}"))
  with pytest.raises(UserError, match="not a directory"):
    build(str(tmp_path / "missing"))
  with pytest.raises(UserError, match="no readable config.json"):
    build(str(tmp_path))
  with pytest.raises(UserError, match="holds a 'ranking' run"):
    build(_fake_run(str(tmp_path / "ranker"), task="ranking", data={"dir": ml100k.path}))
  other = prepare(load_raw("synthetic", synthetic={"num_users": 30, "num_items": 40,
                                                   "num_events": 600, "seed": 0}),
                  str(tmp_path / "synthetic"))
  with pytest.raises(UserError, match="user vocabulary differs"):
    build(_fake_run(str(tmp_path / "elsewhere"), task="foundation", data={"dir": other.path},
                    model={"dim": 16}))
  # The same users and items split later in time: its training data holds our held-out events.
  temporal = prepare(ml100k_raw, str(tmp_path / "temporal"), PrepareOptions(split="temporal"))
  with pytest.raises(UserError, match="another split"):
    build(_fake_run(str(tmp_path / "later"), task="foundation", data={"dir": temporal.path},
                    model={"dim": 16}))


@pytest.mark.slow
def test_an_exported_ranker_serves_the_same_feature(ml100k, encoder_workdir, tmp_path):
  ranker_dir = str(tmp_path / "ranker")
  train(_config("movielens_dlrm", ml100k.path, f"model.user_embedding_from={encoder_workdir}",
                "train.num_steps=3", "train.eval_every=3"), ranker_dir)
  bundle, _ = export_workdir(encoder_workdir, str(tmp_path / "exports"), exact=True,
                             ranker=ranker_dir)
  recommender = Recommender(bundle, ServingConfig(candidates=50), BetaPosteriors(0))
  assert recommender.user_encoder is not None
  user = str(ml100k.vocabs["user"].raw_ids[0])
  tokens = ml100k.user_tokens([2])[0]
  now = int(tokens["timestamp"][-1]) + 60
  answer = recommender.recommend([Request(user_id=user, k=5, now=now)])[0]
  assert len(answer["items"]) == 5 and set(answer["items"][0]["heads"]) == {"click", "like",
                                                                             "rating"}
  # The bundle's copy of the encoder gives what the training workdir's gives.
  served = recommender.user_encoder.before([tokens], [2], [now])
  trained = UserEncoder.from_workdir(encoder_workdir).before([tokens], [2], [now])
  np.testing.assert_allclose(served, trained, atol=1e-5)
