"""Next-item losses over hidden states h [B, L, D], targets [B, L] (0 = no loss) and the item
embedding table [V, D]. Ids 0 (padding) and 1 (out-of-vocabulary) are never predicted.

- "ce": full-softmax cross-entropy over the whole catalogue.
- "sampled_softmax": softmax over the target and K negatives drawn by popularity, with logQ
  correction (subtract log q) so the estimate is unbiased for the full softmax (Bengio & Senecal
  2008; Yi et al. 2019), and accidental hits (a negative equal to the target) removed.
- "bce": binary cross-entropy with K uniform negatives per position (the SASRec paper's loss).
- "gbce": gSASRec's generalised BCE (Petrov & Macdonald 2023): the positive's probability is raised
  to the power beta, which undoes the overconfidence that negative sampling causes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxrec.errors import UserError

LOSSES = ("ce", "sampled_softmax", "bce", "gbce")
NEG = -1e9
FIRST_ID = 2


def _mean(per_position: jax.Array, targets: jax.Array) -> jax.Array:
  weight = (targets > 0).astype(per_position.dtype)
  return (per_position * weight).sum() / jnp.maximum(weight.sum(), 1.0)


def watched_so_far(inputs, ids, num_items):
  """[B, L, N] bool: whether item ids[n] (ids [N], each < num_items) is among inputs[b, :t + 1],
  the tokens position t has read (padding, id 0, never counts). From each item's first position
  in each row (one scatter into [B, num_items]): a [B, L, N] comparison with a running max over
  L cost ~10x more, on the hot path of every full-softmax step."""
  b, length = inputs.shape
  first = jnp.full((b, num_items), length, jnp.int32).at[jnp.arange(b)[:, None], inputs].min(
      jnp.broadcast_to(jnp.arange(length), inputs.shape))
  first = first.at[:, 0].set(length)  # padding is never watched
  return first[:, ids][:, None, :] <= jnp.arange(length)[None, :, None]


def watched_before(seen, ids):
  """[B, N] bool: whether item ids[n] is in row b of `seen` [B, S] (each row sorted, padded with
  zeros: the items watched before a training window)."""
  at = jax.vmap(lambda row: jnp.searchsorted(row, ids))(seen)
  found = jnp.take_along_axis(seen, jnp.minimum(at, seen.shape[1] - 1), axis=1) == ids
  return found & (ids > 0)


def full_softmax_nll(h, targets, items, exclude=None, bias=None, smoothing=0.0):
  """Per-position negative log-likelihood [B, L] of the target under the full softmax; where
  exclude [B, L, V] is True that item is left out of the position's softmax (never the target);
  `bias` [B, L, V] is added to the logits (a prior such as the items' recent popularity). With
  label `smoothing` e, the target is (1 - e) of the label and the rest spread evenly over every
  item the softmax keeps (Szegedy et al. 2016)."""
  logits = jnp.einsum("bld,vd->blv", h, items)
  if bias is not None:
    logits = logits + bias
  logits = logits.at[..., :FIRST_ID].set(NEG)
  if exclude is not None:
    keep_target = jnp.arange(items.shape[0]) == targets[..., None]
    logits = jnp.where(exclude & ~keep_target, NEG, logits)
  target_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  if smoothing:
    kept = logits > NEG / 2
    mean_logit = jnp.where(kept, logits, 0.0).sum(-1) / kept.sum(-1)
    target_logit = (1.0 - smoothing) * target_logit + smoothing * mean_logit
  return jax.nn.logsumexp(logits, axis=-1) - target_logit


def full_softmax(h, targets, items, excluded=None, bias=None, smoothing=0.0):
  exclude = None if excluded is None else excluded(None)
  return _mean(full_softmax_nll(h, targets, items, exclude, bias, smoothing), targets)


def sampled_softmax_nll(h, targets, items, key, num_negatives, log_q, excluded=None):
  """Per-position [B, L] sampled-softmax loss with logQ correction, accidental hits removed."""
  negatives = jax.random.categorical(key, log_q, shape=(num_negatives,))
  exclude = None if excluded is None else excluded(negatives)
  return sampled_softmax_nll_of(h, targets, items[targets], negatives, items[negatives], log_q,
                                exclude)


def sampled_softmax_nll_of(h, targets, target_vectors, negatives, negative_vectors, log_q,
                           exclude=None):
  """sampled_softmax_nll from the vectors it reads: the targets' [B, L, D] and the negatives'
  [K, D] (ids [K]), so a caller can compute those rows alone instead of the whole table; where
  exclude [B, L, K] is True that negative is left out of the position's softmax."""
  positive = jnp.einsum("bld,bld->bl", h, target_vectors) - log_q[targets]
  negative = jnp.einsum("bld,kd->blk", h, negative_vectors) - log_q[negatives]
  negative = jnp.where(negatives[None, None] == targets[..., None], NEG, negative)
  if exclude is not None:
    negative = jnp.where(exclude, NEG, negative)
  logits = jnp.concatenate([positive[..., None], negative], axis=-1)
  return jax.nn.logsumexp(logits, axis=-1) - positive


def alias_table(log_q) -> tuple[np.ndarray, np.ndarray]:
  """Walker's alias table (Vose's construction, on the host in float64) for drawing ids with
  probability q = exp(log_q) / sum: draw a uniform bucket i, keep i with probability prob[i],
  else take alias[i]. Exact for any q however small, unlike a float32 CDF, whose resolution near
  1 (~6e-8) drops or lumps a large catalogue's tail items."""
  q = np.exp(np.asarray(log_q, np.float64))
  prob = q / q.sum() * len(q)
  alias = np.arange(len(q), dtype=np.int32)
  small, large = list(np.flatnonzero(prob < 1.0)), list(np.flatnonzero(prob >= 1.0))
  while small and large:
    s, l = small.pop(), large.pop()
    alias[s] = l
    prob[l] -= 1.0 - prob[s]
    (small if prob[l] < 1.0 else large).append(l)
  prob[large] = 1.0  # what is left holds exactly its own bucket, up to rounding
  prob[small] = 1.0
  return prob.astype(np.float32), alias


def sample_by_alias(key, table: tuple[np.ndarray, np.ndarray], num_samples: int) -> jax.Array:
  """`num_samples` ids drawn with probability q (with replacement) from alias_table(log_q):
  O(K) per step. jax.random.categorical(log_q, shape=(K,)) draws K x V Gumbel numbers, which at
  a million items costs more than the rest of a small model's step."""
  prob, alias = (jnp.asarray(x) for x in table)
  bucket_key, keep_key = jax.random.split(key)
  buckets = jax.random.randint(bucket_key, (num_samples,), 0, prob.shape[0])
  keep = jax.random.uniform(keep_key, (num_samples,)) < prob[buckets]
  return jnp.where(keep, buckets, alias[buckets]).astype(jnp.int32)


def sampled_softmax(h, targets, items, key, num_negatives, log_q, excluded=None):
  return _mean(sampled_softmax_nll(h, targets, items, key, num_negatives, log_q, excluded),
               targets)


def _pos_neg_scores(h, targets, items, key, num_negatives):
  negatives = jax.random.randint(key, targets.shape + (num_negatives,), FIRST_ID, items.shape[0])
  positive = jnp.einsum("bld,bld->bl", h, items[targets])
  negative = jnp.einsum("bld,blkd->blk", h, items[negatives])
  return positive, negative


def bce(h, targets, items, key, num_negatives):
  positive, negative = _pos_neg_scores(h, targets, items, key, num_negatives)
  return _mean(jax.nn.softplus(-positive) + jax.nn.softplus(negative).sum(-1), targets)


def gbce(h, targets, items, key, num_negatives, t):
  positive, negative = _pos_neg_scores(h, targets, items, key, num_negatives)
  alpha = num_negatives / (items.shape[0] - FIRST_ID - 1)
  beta = alpha * (t * (1 - 1 / alpha) + 1 / alpha)
  return _mean(-beta * jax.nn.log_sigmoid(positive) + jax.nn.softplus(negative).sum(-1), targets)


def next_item_loss(name: str, h, targets, items, *, key=None, num_negatives: int = 256,
                   log_q=None, gbce_t: float = 0.75, excluded=None, bias=None, smoothing=0.0):
  """The loss `name`; excluded(ids [N] or None for every item) -> [B, L, N] or None, where
  given, names the items each position's softmax leaves out ("ce" and "sampled_softmax" only);
  `bias` [B, L, V] is added to every logit and label `smoothing` spread over them ("ce" only)."""
  if (bias is not None or smoothing) and name != "ce":
    raise UserError("a logit prior or label smoothing over the whole catalogue needs "
                    f"loss.name='ce', not {name!r}.")
  if name == "ce":
    return full_softmax(h, targets, items, excluded, bias, smoothing)
  if name == "sampled_softmax":
    return sampled_softmax(h, targets, items, key, num_negatives, log_q, excluded)
  if name == "bce":
    return bce(h, targets, items, key, num_negatives)
  if name == "gbce":
    return gbce(h, targets, items, key, num_negatives, gbce_t)
  raise UserError(f"unknown loss {name!r}: use one of {', '.join(LOSSES)}.")
