import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxrec.models.row_optimizers import RowOptimizer


def _batch(seed, rows=50, dim=4, n=12):
  rng = np.random.default_rng(seed)
  ids = rng.integers(0, rows // 5, n)  # few distinct ids: many repeats
  return jnp.asarray(ids), jnp.asarray(rng.standard_normal((n, dim)), jnp.float32)


def _dense_grad(ids, row_grads, shape):
  return jnp.zeros(shape).at[ids].add(row_grads)


@pytest.mark.parametrize("kind", ["sgd", "adagrad"])
def test_sparse_steps_equal_dense_optax_steps(kind):
  table = jax.random.normal(jax.random.key(0), (50, 4))
  sparse = RowOptimizer(kind, learning_rate=0.1)
  dense = optax.sgd(0.1) if kind == "sgd" else optax.adagrad(0.1)
  sparse_table, accumulator = jnp.array(table, copy=True), sparse.init(table)
  dense_table, dense_state = table, dense.init(table)
  update = jax.jit(sparse.update, donate_argnums=(0, 1))
  for seed in range(5):
    ids, row_grads = _batch(seed)
    sparse_table, accumulator = update(sparse_table, accumulator, ids, row_grads)
    updates, dense_state = dense.update(_dense_grad(ids, row_grads, table.shape), dense_state)
    dense_table = optax.apply_updates(dense_table, updates)
  np.testing.assert_allclose(sparse_table, dense_table, rtol=1e-5, atol=1e-6)
  untouched = np.setdiff1d(np.arange(50), np.concatenate([np.asarray(_batch(s)[0])
                                                          for s in range(5)]))
  np.testing.assert_array_equal(np.asarray(sparse_table)[untouched], np.asarray(table)[untouched])


def test_rowwise_adagrad_keeps_one_accumulator_per_row():
  table = jnp.zeros((10, 3))
  opt = RowOptimizer("rowwise_adagrad", learning_rate=1.0, initial_accumulator=0.0, eps=0.0)
  accumulator = opt.init(table)
  assert accumulator.shape == (10,)
  ids = jnp.array([2, 2, 5])
  grads = jnp.array([[1.0, 1.0, 1.0], [1.0, 1.0, 1.0], [0.0, 3.0, 0.0]])
  table, accumulator = opt.update(table, accumulator, ids, grads)
  # Row 2: summed gradient (2, 2, 2), mean square 4 -> step 2 / 2 = 1 per element.
  np.testing.assert_allclose(table[2], [-1.0, -1.0, -1.0])
  np.testing.assert_allclose(accumulator[2], 4.0)
  # Row 5: gradient (0, 3, 0), mean square 3 -> step (0, 3, 0) / sqrt(3).
  np.testing.assert_allclose(table[5], [0.0, -np.sqrt(3.0), 0.0], rtol=1e-6)
  assert float(jnp.abs(table[jnp.array([0, 1, 3, 4, 6, 7, 8, 9])]).sum()) == 0


def test_unknown_kind_is_refused():
  with pytest.raises(ValueError, match="unknown row optimizer 'adam'"):
    RowOptimizer("adam")
