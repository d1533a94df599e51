"""Multi-task DLRM ranking: the model's variants, its losses, sparse updates equal to dense ones,
config validation, and a short training run on MovieLens-100K impressions."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxrec.config import apply_overrides, load_config
from jaxrec.errors import UserError
from jaxrec.models.dlrm import DLRM, DLRMSpec
from jaxrec.models.embedding import pool
from jaxrec.train.ranking import RankingTask, head_loss, head_prediction
from jaxrec.models.row_optimizers import RowOptimizer
from jaxrec.train.step import make_train_step, trainable
from jaxrec.train.trainer import train

SPEC = dict(single_hot={"user": 50, "item": 80}, multi_hot={"genres": 10}, num_dense=3,
            heads=("click", "watch"), dim=8, bottom=(16,), top=(16,))


@pytest.fixture(autouse=True)
def no_mesh():
  """Models built outside the partitioner: their sharding annotations stay metadata."""
  with nnx.use_eager_sharding(False):
    yield


def batch(seed=0, size=16):
  rng = np.random.default_rng(seed)
  genres = rng.integers(0, 10, (size, 3))
  genres[:, 2] = 0  # padding
  return {"sparse": {"user": rng.integers(0, 50, size), "item": rng.integers(0, 80, size)},
          "multi_hot": {"genres": genres}, "dense": rng.normal(size=(size, 3)).astype("f4"),
          "labels": {"click": rng.integers(0, 2, size).astype("f4"),
                     "watch": rng.random(size).astype("f4")}}


@pytest.mark.parametrize("variant", [
    dict(interaction="dot"), dict(interaction="dcn", cross_layers=2), dict(interaction="fm"),
    dict(interaction="none", wide=True), dict(deep=False, wide=True),
    dict(wide=True, stack_below=60)])
def test_every_variant_scores_each_head(variant):
  model = DLRM(DLRMSpec(**SPEC, **variant), rngs=nnx.Rngs(0))
  out = model(batch())
  assert out.shape == (16, 2) and bool(jnp.all(jnp.isfinite(out)))
  assert float(jnp.std(out)) > 0


def test_logistic_regression_is_linear_in_one_hot_features():
  model = DLRM(DLRMSpec(**SPEC, deep=False, wide=True), rngs=nnx.Rngs(0))
  b = batch()
  tables = model.tables
  expected = (model.wide_dense(b["dense"]) + tables["wide_user"](b["sparse"]["user"])
              + tables["wide_item"](b["sparse"]["item"])
              + jnp.sum(tables["wide_genres"](b["multi_hot"]["genres"])
                        * (b["multi_hot"]["genres"] > 0)[..., None], 1))
  np.testing.assert_allclose(model(b), expected, rtol=1e-5, atol=1e-6)


def test_pooling_skips_padding_and_applies_weights():
  rows = jnp.arange(12, dtype=jnp.float32).reshape(1, 3, 4)
  ids = jnp.array([[5, 7, 0]])
  np.testing.assert_allclose(pool(rows, ids), [[4, 6, 8, 10]])
  np.testing.assert_allclose(pool(rows, ids, mode="mean"), [[2, 3, 4, 5]])
  np.testing.assert_allclose(pool(rows, ids, jnp.array([[2.0, 0.5, 9.0]])), [[2, 4.5, 7, 9.5]])


def test_head_losses_and_predictions():
  z, y = jnp.array([0.3, -1.2]), jnp.array([1.0, 0.0])
  np.testing.assert_allclose(head_loss("binary", z, y), -jnp.log(jnp.array(
      [jax.nn.sigmoid(0.3), 1 - jax.nn.sigmoid(-1.2)])), rtol=1e-6)
  watch = jnp.array([2.5, 0.0])
  np.testing.assert_allclose(head_loss("regression", z, watch), (z - jnp.log1p(watch)) ** 2)
  # Weighted logistic: a positive counts its watch time, a negative counts once.
  np.testing.assert_allclose(head_loss("weighted_logistic", z, watch),
                             [-2.5 * jax.nn.log_sigmoid(0.3), -jax.nn.log_sigmoid(1.2)], rtol=1e-6)
  np.testing.assert_allclose(head_prediction("regression", jnp.log1p(watch)), watch, rtol=1e-6)
  np.testing.assert_allclose(head_prediction("weighted_logistic", z), jnp.exp(z))


def test_small_tables_share_one_stacked_table():
  model = DLRM(DLRMSpec(**SPEC, wide=True, stack_below=60), rngs=nnx.Rngs(0))
  assert set(model.tables) == {"item", "stacked", "wide_item", "wide_stacked"}
  assert model.tables["stacked"].num_rows == 50 + 10  # user and genres, at offsets 0 and 50
  b = batch()
  ids = model.embedding_ids(b)["stacked"]
  np.testing.assert_array_equal(ids[:, 0], b["sparse"]["user"])
  np.testing.assert_array_equal(ids[:, 1:], b["multi_hot"]["genres"] + 50)
  # The same model through its own lookups and through rows gathered outside it.
  rows = {name: model.tables[name](i) for name, i in model.embedding_ids(b).items()}
  np.testing.assert_allclose(model(b, rows), model(b), rtol=1e-6)


@pytest.mark.parametrize("stack_below", [0, 60])
def test_sparse_sgd_step_equals_dense_sgd_step(stack_below):
  """Gradients taken with respect to the gathered rows (repeated ids included), applied to the
  touched rows only, give the table a dense SGD step over the whole table gives."""
  def loss_fn(model, b, key, rows=None):
    out = model(b, rows)
    return jnp.mean(head_loss("binary", out[:, 0], b["labels"]["click"])
                    + head_loss("regression", out[:, 1], b["labels"]["watch"]))

  spec = DLRMSpec(**SPEC, interaction="dcn", wide=True, stack_below=stack_below)
  results = []
  for row_optimizer in (RowOptimizer("sgd", 0.5), None):
    model = DLRM(spec, rngs=nnx.Rngs(0), row_optimizer=row_optimizer)
    graphdef, state = nnx.split(model)
    tx = optax.sgd(0.5)
    step = jax.jit(make_train_step(graphdef, tx, loss_fn, 0, row_optimizer))
    state, _, out = step(state, tx.init(trainable(state)), batch(), jnp.int32(0))
    results.append((nnx.merge(graphdef, state), float(out["loss"])))
  (sparse, sparse_loss), (dense, dense_loss) = results
  assert sparse_loss == pytest.approx(dense_loss, rel=1e-6)
  for name in sparse.tables:
    np.testing.assert_allclose(sparse.tables[name].table[...], dense.tables[name].table[...],
                               rtol=1e-5, atol=1e-7)
  np.testing.assert_allclose(sparse.heads.kernel[...], dense.heads.kernel[...], rtol=1e-5)


def config(ml100k, *overrides):
  return apply_overrides(load_config("configs/movielens_dlrm.py:smoke"),
                         [f"data.dir={ml100k.path}", *overrides])


@pytest.mark.parametrize("override, message", [
    ("heads.click.label=clicks", "heads.click.label"),
    ("heads.like.kind=poisson", "heads.like.kind"),
    ("model.exclude_features=colour", "does not have"),
    ("embedding.optimizer=adam", "embedding.optimizer"),
])
def test_bad_ranking_configs_say_what_to_fix(ml100k, override, message):
  with pytest.raises(UserError, match=message):
    RankingTask(config(ml100k, override))


def test_policy_weights_must_name_heads(ml100k):
  bad = config(ml100k)
  with bad.unlocked():
    bad.policy.share = 1.0
  with pytest.raises(UserError, match="not heads"):
    RankingTask(bad)


@pytest.mark.slow
def test_dlrm_learns_movielens_impressions(ml100k, tmp_path):
  results = train(config(ml100k, "train.num_steps=60", "train.eval_every=60",
                         "train.batch_size=500"), str(tmp_path))
  test = results["test"]
  for head in ("click", "like", "rating"):
    assert 0.0 <= test[f"{head}/auc"] <= 1.0
  assert test["click/auc"] > 0.7, test  # popularity alone separates rated from random items
  assert 0.0 < test["ndcg@10"] <= 1.0
  assert test["num_rows"] == 943 * 5  # each user's held-out rating and its 4 unseen items
  # It scores impressions, not the catalogue: no top-10 lists, and a line that says so.
  assert set(results["beyond_accuracy"]) == {"notes"}
  assert "ranking workdirs score each user's impressions" in results["beyond_accuracy"]["notes"][0]
