"""Causal attention for long histories: a sliding window plus attention-sink keys, in chunks.

`causal_attention(q, k, v, valid, window=W, num_global=G)` lets each query see the W most recent
keys (itself included) and the first G positions of the sequence, never a key after it. It is
computed chunk by chunk: the queries of one chunk of C positions meet only the keys of their own
chunk and the ceil((W-1)/C) chunks before it, plus the G global keys, so activations and their
gradients take O(L·(W + C + G)) memory instead of the O(L²) of `window=None`, the full causal
attention that stays available for short contexts and is the reference the local path is tested
against.

What the G "global" positions are: keys every later query can see (global in visibility). Being
first under causal attention, they see only each other, never the history, so they carry no
summary of it: the foundation model fills them with learned tokens that act as attention sinks
(StreamingLLM, Xiao et al. 2023), a place for a query's softmax mass to go when nothing in its
window matters, which keeps windowed attention stable. Information older than the window reaches
a position only through the layers (N layers reach back N·(W-1) tokens), not through these keys.

Sequences are left-padded: `valid` is False on padding. Padded keys are never attended; padded
query rows see no key, get uniform weights over finite logits (no NaN in values or gradients),
and are zeroed.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from jaxrec.errors import UserError

NEG_INF = -1e9  # finite, so a row with no visible key stays NaN-free


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, valid: jax.Array, *,
                     window: int | None = None, num_global: int = 0,
                     chunk: int = 128) -> jax.Array:
  """q, k, v [B, L, H, Dh], valid [B, L] bool -> [B, L, H, Dh]. Always causal.

  window=None: full causal attention (O(L²) memory). window=W: the W most recent keys plus the
  first `num_global` positions (attention sinks, see above), in chunks of `chunk` queries
  (O(L·(W + chunk + G))).
  """
  _check_arguments(q, k, v, valid, window, num_global, chunk)
  q = q * (1.0 / math.sqrt(q.shape[-1]))
  length = q.shape[1]
  if window is None:
    out = _full(q, k, v, valid)
  else:
    out = _chunked(q, k, v, valid, window, num_global, min(chunk, length))
  return out * valid[:, :, None, None].astype(out.dtype)


def attention_mask(length: int, window: int | None = None, num_global: int = 0) -> jax.Array:
  """The [L, L] bool mask (query, key) that `causal_attention` implements, before padding."""
  query = jnp.arange(length)[:, None]
  key = jnp.arange(length)[None, :]
  allowed = key <= query
  if window is not None:
    allowed = allowed & ((query - key < window) | (key < num_global))
  return allowed


def _full(q, k, v, valid):
  length = q.shape[1]
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k)
  mask = attention_mask(length)[None, None] & valid[:, None, None, :]
  weights = jax.nn.softmax(jnp.where(mask, logits, NEG_INF), axis=-1)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


def _chunked(q, k, v, valid, window, num_global, chunk):
  b, length, h, d = q.shape
  num_chunks = -(-length // chunk)
  # Right padding is never seen by a real query (causality) and is cut off at the end.
  pad = num_chunks * chunk - length
  if pad:
    widen = lambda t: jnp.pad(t, ((0, 0), (0, pad)) + ((0, 0),) * (t.ndim - 2))
    q, k, v, valid_padded = widen(q), widen(k), widen(v), widen(valid)
  else:
    valid_padded = valid
  # Chunks of keys a query chunk needs: its own and `lookback` before it.
  lookback = -(-(window - 1) // chunk)
  span = (lookback + 1) * chunk
  to_chunks = lambda t: t.reshape((b, num_chunks, chunk) + t.shape[2:])
  qc = to_chunks(q)
  kc, vc, valid_c = (_with_previous_chunks(to_chunks(t), lookback) for t in (k, v, valid_padded))
  query_pos = (jnp.arange(num_chunks)[:, None] * chunk + jnp.arange(chunk)[None, :])
  key_pos = ((jnp.arange(num_chunks)[:, None] - lookback) * chunk + jnp.arange(span)[None, :])
  # [n, C, S]: causal, inside the window, not before the sequence start (key_pos < 0).
  near = ((key_pos[:, None, :] <= query_pos[:, :, None])
          & (query_pos[:, :, None] - key_pos[:, None, :] < window)
          & (key_pos[:, None, :] >= 0))
  near_mask = near[None, :, None] & valid_c[:, :, None, None, :]          # [B, n, 1, C, S]
  logits = jnp.einsum("bnqhd,bnkhd->bnhqk", qc, kc)
  logits = jnp.where(near_mask, logits, NEG_INF)
  values = vc
  if num_global:
    g = min(num_global, length)
    global_pos = jnp.arange(g)
    # A global key counts here only when the window does not already hold it (no double count).
    far = ((global_pos[None, None, :] <= query_pos[:, :, None])
           & (query_pos[:, :, None] - global_pos[None, None, :] >= window))     # [n, C, G]
    far_mask = far[None, :, None] & valid[:, None, None, None, :g]
    global_logits = jnp.einsum("bnqhd,bkhd->bnhqk", qc, k[:, :g])
    global_logits = jnp.where(far_mask, global_logits, NEG_INF)
    logits = jnp.concatenate([global_logits, logits], axis=-1)
    values = jnp.concatenate(
        [jnp.broadcast_to(v[:, None, :g], (b, num_chunks, g, h, d)), vc], axis=2)
  weights = jax.nn.softmax(logits, axis=-1)
  out = jnp.einsum("bnhqk,bnkhd->bnqhd", weights, values)
  return out.reshape(b, num_chunks * chunk, h, d)[:, :length]


def _with_previous_chunks(chunks: jax.Array, lookback: int) -> jax.Array:
  """[B, n, C, ...] -> [B, n, (lookback+1)·C, ...]: each chunk preceded by the `lookback` chunks
  before it (zeros before the start), oldest first."""
  if lookback == 0:
    return chunks
  padded = jnp.pad(chunks, ((0, 0), (lookback, 0)) + ((0, 0),) * (chunks.ndim - 2))
  n = chunks.shape[1]
  shifted = [padded[:, j:j + n] for j in range(lookback + 1)]
  return jnp.concatenate(shifted, axis=2)


def _check_arguments(q, k, v, valid, window, num_global, chunk):
  if q.ndim != 4 or q.shape != k.shape or q.shape != v.shape:
    raise ValueError(f"q, k, v must share one shape [B, L, H, Dh]; got {q.shape}, {k.shape}, "
                     f"{v.shape}")
  if valid.shape != q.shape[:2]:
    raise ValueError(f"valid must be [B, L] = {q.shape[:2]}, got {valid.shape}")
  if window is not None and (not isinstance(window, int) or window < 1):
    raise UserError(f"attention window must be a positive number of tokens, got {window!r}; "
                    f"set model.window to e.g. 256, or to None for full attention.")
  if not isinstance(num_global, int) or num_global < 0:
    raise UserError(f"num_global must be a count of attention-sink tokens >= 0, got "
                    f"{num_global!r}.")
  if not isinstance(chunk, int) or chunk < 1:
    raise UserError(f"attention chunk must be a positive number of queries, got {chunk!r}; "
                    f"128 is a good default.")
