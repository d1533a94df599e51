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


def test_label_smoothing_spreads_the_label_over_the_items_the_softmax_keeps():
  h, targets, items = _inputs()
  exclude = jnp.zeros((2, 3, V), bool).at[1, :, 4].set(True).at[1, 2, 11].set(True)
  nll = np.asarray(losses.full_softmax_nll(h, targets, items, exclude, smoothing=0.1))
  logits = np.einsum("bld,vd->blv", h, items)
  for b, t in np.ndindex(targets.shape):
    keep = ~np.asarray(exclude[b, t])
    keep[:2] = False
    keep[int(targets[b, t])] = True  # the target stays even where excluded (row 1, position 2)
    lse = np.log(np.exp(logits[b, t][keep]).sum())
    target = int(targets[b, t])
    if target:
      expected = 0.9 * (lse - logits[b, t, target]) + 0.1 * (lse - logits[b, t][keep].mean())
      assert nll[b, t] == pytest.approx(expected, rel=1e-5)
  with pytest.raises(UserError, match="label smoothing"):
    losses.next_item_loss("sampled_softmax", h, targets, items, key=jax.random.key(0),
                          log_q=jnp.zeros(V), smoothing=0.1)


def test_unknown_loss():
  h, targets, items = _inputs()
  with pytest.raises(UserError, match="unknown loss 'hinge'"):
    losses.next_item_loss("hinge", h, targets, items)


def test_watched_items_leave_the_softmax_from_the_position_that_read_them():
  inputs = jnp.array([[0, 4, 6, 4], [9, 0, 3, 5]])  # [B, L]; 0 is padding
  full = np.asarray(losses.watched_so_far(inputs, jnp.arange(V), V))  # [B, L, V]
  np.testing.assert_array_equal(full[:, :, [4, 9]],
                                np.asarray(losses.watched_so_far(inputs, jnp.array([4, 9]), V)))
  expected = np.zeros((2, 4, V), bool)
  for b in range(2):
    for t in range(4):
      expected[b, t, [int(i) for i in inputs[b, :t + 1] if i]] = True
  np.testing.assert_array_equal(full, expected)

  h = jax.random.normal(jax.random.key(0), (2, 4, D))
  items = jax.random.normal(jax.random.key(1), (V, D))
  targets = jnp.array([[4, 7, 6, 2], [3, 3, 5, 8]])  # position 0's target 4 is read at t=1 only;
  # row 1 position 1's target 3 is not yet read; position 2's target 5 reads 3 (excluded)
  nll = np.asarray(losses.full_softmax_nll(h, targets, items, jnp.asarray(expected)))
  logits = np.einsum("bld,vd->blv", h, items)
  for b in range(2):
    for t in range(4):
      keep = ~expected[b, t]
      keep[:2] = False
      keep[int(targets[b, t])] = True  # the target stays, even one read before (a re-watch)
      row = logits[b, t][keep]
      assert nll[b, t] == pytest.approx(np.log(np.exp(row).sum()) - logits[b, t, targets[b, t]],
                                        rel=1e-4)
  # Sampled softmax: the excluded negatives drop out exactly like accidental hits.
  negatives = jnp.array([4, 6, 9, 10])
  log_q = jnp.zeros(V)
  exclude = losses.watched_so_far(inputs, negatives, V)
  sampled = np.asarray(losses.sampled_softmax_nll_of(h, targets, items[targets], negatives,
                                                     items[negatives], log_q, exclude))
  for b in range(2):
    for t in range(4):
      drop = np.asarray(exclude[b, t]) | (np.asarray(negatives) == int(targets[b, t]))
      row = np.r_[logits[b, t, targets[b, t]], logits[b, t, np.asarray(negatives)][~drop]]
      assert sampled[b, t] == pytest.approx(np.log(np.exp(row).sum()) - row[0], rel=1e-4)
