"""Sampled softmax in the foundation task computes only the step's item vectors (inputs,
targets, negatives), with the same loss and gradients as from the whole catalogue's vectors."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec.config import apply_overrides, load_config
from jaxrec.train.losses import alias_table, sample_by_alias
from jaxrec.train.trainer import build_task

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _task(prepared, *overrides):
  config = apply_overrides(
      load_config(os.path.join(ROOT, "configs", "movielens_foundation.py:smoke")),
      [f"data.dir={prepared}", "loss.name=sampled_softmax", "loss.num_negatives=16",
       "loss.horizon=2", "loss.genre_weight=0.1", "model.id_dropout=0.3", *overrides])
  return build_task(config)


def _model(task):
  with nnx.use_eager_sharding(False):
    return task.build_model(nnx.Rngs(0))


def _batch(task):
  return {k: jnp.asarray(v) for k, v in next(iter(task.train_data(0))).items()}


def _catalogue_loss(task, model, batch, key):
  """The loss as the task computed it before: every item's vector, then the objective."""
  dropout_key, sample_key, id_key = jax.random.split(key, 3)
  keep, learn = task.id_masks(id_key)
  items = model.item_vectors(task._metadata(), keep, learn)
  hidden = model(batch["inputs"], task._fields(batch), items, rngs=nnx.Rngs(dropout=dropout_key))
  return task.objective(model, hidden, batch, items, sample_key)


@pytest.fixture(scope="module")
def sampled(ml100k):
  task = _task(ml100k.path)
  return task, _model(task), _batch(task)


def test_step_items_loss_and_gradients_equal_the_whole_catalogues(sampled):
  task, model, batch = sampled
  key = jax.random.key(7)
  graphdef, params = nnx.split(model)

  def value_and_grad(loss_fn):
    return jax.jit(jax.value_and_grad(
        lambda p: loss_fn(nnx.merge(graphdef, p), batch, key)))(params)

  ours, our_grads = value_and_grad(task.loss)
  theirs, their_grads = value_and_grad(lambda m, b, k: _catalogue_loss(task, m, b, k))
  assert float(ours) == pytest.approx(float(theirs), rel=1e-5)
  for a, b in zip(jax.tree.leaves(our_grads), jax.tree.leaves(their_grads)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)
  # The id table's gradient is non-zero only on the rows the step read.
  table_grad = np.asarray(our_grads["items"]["id_embedding"]["embedding"][...])
  touched = np.flatnonzero(np.abs(table_grad).sum(1))
  read = np.unique(np.concatenate([np.asarray(batch["inputs"]).ravel(),
                                   np.asarray(batch["targets"]).ravel(),
                                   np.asarray(task.sample_negatives(
                                       jax.random.split(key, 3)[1])).ravel(), [1]]))
  assert set(touched) <= set(read)


def test_sampled_step_never_builds_a_catalogue_sized_array(sampled, ml100k):
  """No intermediate of the sampled loss has a [V, D] shape (the old step encoded all V items);
  the full-softmax loss does."""
  def catalogue_arrays(task, model, batch):
    graphdef, params = nnx.split(model)
    jaxpr = jax.make_jaxpr(lambda p: task.loss(nnx.merge(graphdef, p), batch,
                                               jax.random.key(0)))(params)
    shape = (task.data.num_items, task.config.model.dim)
    return [e for e in jaxpr.jaxpr.eqns for v in e.outvars if tuple(v.aval.shape) == shape]
  assert catalogue_arrays(*sampled) == []
  full = _task(ml100k.path, "loss.name=ce")
  assert catalogue_arrays(full, sampled[1], sampled[2])


def test_alias_sampler_draws_by_q_even_for_tiny_q():
  rng = np.random.default_rng(0)
  q = np.concatenate([[0.0, 0.0], rng.dirichlet(np.ones(50)), np.full(1000, 1e-12)])
  q /= q.sum()
  prob, alias = alias_table(np.log(np.maximum(q, 1e-300)))
  # The table's exact distribution: a bucket's kept share plus what others alias to it.
  implied = prob.astype(np.float64) + np.bincount(alias, weights=1.0 - prob, minlength=len(q))
  np.testing.assert_allclose(implied / len(q), q, rtol=1e-5, atol=1e-15)
  draws = np.asarray(sample_by_alias(jax.random.key(0), (prob, alias), 100_000))
  assert draws.min() >= 2  # padding and OOV are never drawn
  frequency = np.bincount(draws, minlength=len(q)) / len(draws)
  np.testing.assert_allclose(frequency, q, atol=0.004)
