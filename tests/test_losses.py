import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.errors import UserError
from jaxrec.train import losses

V, D = 12, 4


def _inputs():
  h = jax.random.normal(jax.random.key(0), (2, 3, D))
  items = jax.random.normal(jax.random.key(1), (V, D))
  targets = jnp.array([[0, 5, 7], [3, 3, 11]])  # 0: no loss at that position
  return h, targets, items


def test_full_softmax_matches_a_hand_computation():
  h, targets, items = _inputs()
  logits = np.einsum("bld,vd->blv", h, items)[..., 2:]  # ids 0 and 1 are never predicted
  expected = []
  for b in range(2):
    for pos in range(3):
      t = int(targets[b, pos])
      if t:
        row = logits[b, pos]
        expected.append(np.log(np.exp(row - row.max()).sum()) + row.max() - row[t - 2])
  assert losses.full_softmax(h, targets, items) == pytest.approx(np.mean(expected), rel=1e-5)


def test_gbce_with_t_zero_is_bce():
  # beta = alpha * (t (1 - 1/alpha) + 1/alpha) = 1 when t = 0
  h, targets, items = _inputs()
  key = jax.random.key(2)
  bce = float(losses.bce(h, targets, items, key, 4))
  assert float(losses.gbce(h, targets, items, key, 4, 0.0)) == pytest.approx(bce, rel=1e-6)
  assert float(losses.gbce(h, targets, items, key, 4, 0.75)) < bce


def test_sampled_softmax_with_many_uniform_negatives_tracks_the_full_partition_function():
  h, targets, items = _inputs()
  k = 4000
  log_q = jnp.full((V,), -jnp.log(V - 2.0)).at[:2].set(-1e9)
  sampled = float(losses.sampled_softmax(h, targets, items, jax.random.key(3), k, log_q))
  # Each of the V - 2 items is drawn about k / (V - 2) times; accidental hits are removed, so
  # the loss is log(e^s+ + k/(V-2) * (Z - e^s+)) - s+ on average over positions.
  logits = np.einsum("bld,vd->blv", h, items)[..., 2:]
  expected = []
  for b in range(2):
    for pos in range(3):
      t = int(targets[b, pos])
      if t:
        e = np.exp(logits[b, pos])
        expected.append(np.log(e[t - 2] + k / (V - 2) * (e.sum() - e[t - 2])) - logits[b, pos, t - 2])
  assert sampled == pytest.approx(np.mean(expected), abs=0.1)


@pytest.mark.parametrize("name", losses.LOSSES)
def test_every_loss_is_finite_and_differentiable(name):
  h, targets, items = _inputs()
  log_q = jnp.log(jnp.arange(V, dtype=jnp.float32) + 1.0) - 5.0
  fn = lambda h: losses.next_item_loss(name, h, targets, items, key=jax.random.key(0),
                                       num_negatives=5, log_q=log_q)
  value, grad = jax.value_and_grad(fn)(h)
  assert np.isfinite(value) and np.all(np.isfinite(grad))
  assert np.all(grad[0, 0] == 0)  # a padded target contributes nothing


def test_unknown_loss():
  h, targets, items = _inputs()
  with pytest.raises(UserError, match="unknown loss 'hinge'"):
    losses.next_item_loss("hinge", h, targets, items)
