"""Chunked sliding-window attention against dense references, and its linear memory."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxrec.errors import UserError
from jaxrec.models.local_attention import NEG_INF, attention_mask, causal_attention


def _inputs(batch=2, length=37, heads=2, dim=8, seed=0, pad=(0, 5)):
  keys = jax.random.split(jax.random.key(seed), 3)
  q, k, v = (jax.random.normal(key, (batch, length, heads, dim)) for key in keys)
  # Left padding, as the pipelines produce it: row i has pad[i] padding positions.
  valid = jnp.arange(length)[None, :] >= jnp.asarray(pad)[:, None]
  return q, k, v, valid


def _dense_reference(q, k, v, valid, window=None, num_global=0):
  """Softmax over an explicit [L, L] mask: what the chunked path must equal."""
  length, dim = q.shape[1], q.shape[-1]
  mask = attention_mask(length, window, num_global)
  # An independent statement of the rule, so the mask helper is checked too.
  qi, ki = np.arange(length)[:, None], np.arange(length)[None, :]
  expected = (ki <= qi) & (((qi - ki) < (window or length + 1)) | (ki < num_global))
  np.testing.assert_array_equal(np.asarray(mask), expected)
  mask = jnp.asarray(expected)[None, None] & valid[:, None, None, :]
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(dim)
  weights = jax.nn.softmax(jnp.where(mask, logits, NEG_INF), axis=-1)
  out = jnp.einsum("bhqk,bkhd->bqhd", weights, v)
  return out * valid[:, :, None, None]


def test_full_path_equals_dense_causal_attention():
  q, k, v, valid = _inputs()
  np.testing.assert_allclose(causal_attention(q, k, v, valid),
                             _dense_reference(q, k, v, valid), atol=1e-5)


@pytest.mark.parametrize("chunk", [4, 16, 128])
def test_window_covering_the_sequence_equals_full_attention(chunk):
  q, k, v, valid = _inputs(length=37)
  out = causal_attention(q, k, v, valid, window=64, chunk=chunk)
  np.testing.assert_allclose(out, causal_attention(q, k, v, valid), atol=1e-5)


@pytest.mark.parametrize("window,num_global,chunk", [
    (1, 0, 8), (5, 0, 8), (8, 0, 8), (9, 0, 8), (6, 3, 4), (10, 4, 8), (7, 12, 5), (3, 1, 37)])
def test_sliding_window_with_global_tokens_equals_dense_masked_reference(window, num_global,
                                                                         chunk):
  q, k, v, valid = _inputs(length=37, pad=(0, 9))
  out = causal_attention(q, k, v, valid, window=window, num_global=num_global, chunk=chunk)
  ref = _dense_reference(q, k, v, valid, window, num_global)
  np.testing.assert_allclose(out, ref, atol=1e-5)


@pytest.mark.slow
def test_window_changes_the_result():
  """Guards the tests above against a path that silently ignores the window."""
  q, k, v, valid = _inputs(length=40)
  local = causal_attention(q, k, v, valid, window=4, chunk=8)
  assert np.abs(np.asarray(local - causal_attention(q, k, v, valid))).max() > 1e-2


@pytest.mark.slow
def test_history_older_than_the_window_is_invisible_and_sinks_are_not_summaries():
  """What model.num_global's tokens are: attention sinks. The last query sees its window and the
  first G positions' own keys; nothing in between reaches it, so the sinks carry no summary."""
  q, k, v, valid = _inputs(length=30, pad=(0, 0))
  window, sinks = 6, 2
  attend = lambda k, v: causal_attention(q, k, v, valid, window=window, num_global=sinks,
                                         chunk=4)[:, -1]
  last = attend(k, v)
  old = slice(sinks, 30 - window)  # neither sinks nor inside the last query's window
  noise = jax.random.normal(jax.random.key(3), k[:, old].shape)
  np.testing.assert_allclose(attend(k.at[:, old].add(noise), v.at[:, old].add(noise)), last,
                             atol=1e-6)
  for changed in (slice(0, sinks), slice(30 - window, 30)):  # the sinks and the window do count
    moved = attend(k, v.at[:, changed].add(1.0))
    assert np.abs(np.asarray(moved - last)).max() > 1e-3


@pytest.mark.slow
def test_padding_rows_are_zero_and_nan_free_in_values_and_gradients():
  q, k, v, valid = _inputs(length=24, pad=(0, 20))
  valid = valid.at[1].set(False)  # a fully padded row too

  def loss(q, k, v, window):
    out = causal_attention(q, k, v, valid, window=window, num_global=2, chunk=8)
    return jnp.sum(out ** 2)

  for window in (None, 5):
    out = causal_attention(q, k, v, valid, window=window, num_global=2, chunk=8)
    assert np.isfinite(np.asarray(out)).all()
    assert np.all(np.asarray(out)[~np.asarray(valid)] == 0)
    grads = jax.grad(loss, argnums=(0, 1, 2))(q, k, v, window)
    for grad in grads:
      assert np.isfinite(np.asarray(grad)).all()
      # Padded keys/values influence nothing.
      assert np.all(np.asarray(grad)[~np.asarray(valid)] == 0)


@pytest.mark.slow
@pytest.mark.parametrize("window,num_global", [(6, 0), (6, 3)])
def test_gradients_equal_the_dense_reference(window, num_global):
  q, k, v, valid = _inputs(length=30, pad=(2, 7))
  target = jax.random.normal(jax.random.key(9), q.shape)

  def loss(fn):
    return lambda q, k, v: jnp.sum((fn(q, k, v) - target) ** 2)

  ours = jax.grad(loss(lambda q, k, v: causal_attention(
      q, k, v, valid, window=window, num_global=num_global, chunk=8)), argnums=(0, 1, 2))(q, k, v)
  ref = jax.grad(loss(lambda q, k, v: _dense_reference(
      q, k, v, valid, window, num_global)), argnums=(0, 1, 2))(q, k, v)
  for a, b in zip(ours, ref):
    np.testing.assert_allclose(a, b, atol=1e-4)


def _train_step_temp_bytes(length, window):
  """Scratch memory XLA plans for a jitted forward + backward at this length."""
  shape = (1, length, 2, 16)
  q = jax.ShapeDtypeStruct(shape, jnp.float32)
  valid = jax.ShapeDtypeStruct(shape[:2], jnp.bool_)

  def loss(q, k, v, valid):
    return jnp.sum(causal_attention(q, k, v, valid, window=window, num_global=4, chunk=64) ** 2)

  grad = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
  return grad.lower(q, q, q, valid).compile().memory_analysis().temp_size_in_bytes


@pytest.mark.slow
def test_local_attention_memory_grows_linearly_and_full_attention_quadratically():
  lengths = (512, 1024, 2048)
  local = [_train_step_temp_bytes(n, window=64) for n in lengths]
  full = [_train_step_temp_bytes(n, window=None) for n in lengths]
  # 4x the length: at most ~4x the memory for the local path (small slack for fixed buffers).
  assert local[2] / local[0] <= 4.4, local
  assert local[1] / local[0] <= 2.2, local
  # The dense path really is quadratic, so this measurement can tell the two apart.
  assert full[2] / full[0] >= 12, full
  assert local[2] < full[2] / 8


def test_bad_arguments_say_what_to_fix():
  q, k, v, valid = _inputs(length=8)
  with pytest.raises(UserError, match="window"):
    causal_attention(q, k, v, valid, window=0)
  with pytest.raises(UserError, match="num_global"):
    causal_attention(q, k, v, valid, window=4, num_global=-1)
  with pytest.raises(UserError, match="chunk"):
    causal_attention(q, k, v, valid, window=4, chunk=0)
  with pytest.raises(ValueError, match="valid"):
    causal_attention(q, k, v, valid[:, :4], window=4)
