"""BPR-MF (Rendle et al. 2009) as a task of the one training loop: the matrix-factorisation
baseline that learns by gradient steps, with the trained models' optimizer, checkpoints, early
stopping and evaluation.

score(u, i) = <user_u, item_i> + bias_i. Each training pair (u, i) is one token of u's training
history; the loss is -log sigmoid(score(u, i) - score(u, j)) for negatives j drawn uniformly from
the catalogue in the step (an occasional j the user did interact with is the usual price of
uniform sampling), plus L2 on the embeddings and biases of the step's users and items, weighted
by `loss.l2`. Evaluation shares the sequential task's protocol: full ranking, earlier items
excluded.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.data import pipelines
from jaxrec.data.vocab import FIRST_ID
from jaxrec.train.sequential import SequentialTask


class BPRMF(nnx.Module):
  def __init__(self, num_users: int, num_items: int, dim: int, init_scale: float = 0.1, *,
               rngs: nnx.Rngs):
    init = nnx.with_partitioning(nnx.initializers.normal(init_scale), ("vocab", "embed"))
    self.user_embedding = nnx.Embed(num_users, dim, embedding_init=init, rngs=rngs)
    self.item_embedding = nnx.Embed(num_items, dim, embedding_init=init, rngs=rngs)
    bias_init = nnx.with_partitioning(nnx.initializers.zeros_init(), ("vocab",))
    self.item_bias = nnx.Param(bias_init(rngs.params(), (num_items,)))

  def item_vectors(self) -> jax.Array:
    return self.item_embedding.embedding[...]


class BPRTask(SequentialTask):
  """A Task (through SequentialTask, whose evaluation batches, sampled-protocol negatives and
  protocol description it shares) training BPRMF on (user, item) pairs."""

  MODELS = {"bpr": BPRMF}
  SHUFFLES_TIES = False  # no order to shuffle

  def build_model(self, rngs):
    cfg = self.config.model
    return BPRMF(self.data.num_users + FIRST_ID, self.data.num_items, cfg.dim,
                 cfg.get("init_scale", 0.1), rngs=rngs)

  def train_data(self, seed: int):
    options = pipelines.PipelineOptions(
        batch_size=pipelines.process_batch_size(self.config.train.batch_size), seed=seed,
        num_epochs=None)
    # Only the pair goes to the devices; the pipeline's context features are not used here.
    return pipelines.pair_dataset(self.data, "train", options=options).map(
        lambda batch: {"user": batch["user"], "item": batch["item"]})

  def loss(self, model, batch, key):
    cfg = self.config.loss
    users, positives = batch["user"], batch["item"]
    negatives = jax.random.randint(key, (len(users), cfg.num_negatives), FIRST_ID,
                                   self.data.num_items)
    user = model.user_embedding(users)  # [B, D]
    positive = model.item_embedding(positives)  # [B, D]
    negative = model.item_embedding(negatives)  # [B, N, D]
    bias = model.item_bias[...]
    positive_score = jnp.sum(user * positive, -1) + bias[positives]
    negative_score = jnp.einsum("bd,bnd->bn", user, negative) + bias[negatives]
    bpr = -jnp.mean(jax.nn.log_sigmoid(positive_score[:, None] - negative_score))
    squares = lambda x: jnp.sum(jnp.square(x), -1)
    l2 = (squares(user) + squares(positive) + jnp.square(bias[positives])
          + jnp.mean(squares(negative) + jnp.square(bias[negatives]), -1))
    return bpr + cfg.l2 * jnp.mean(l2)

  def eval_batches(self, split: str):
    options = pipelines.PipelineOptions(
        batch_size=pipelines.process_batch_size(self.config.eval.batch_size))
    negatives = self._negatives(split) if self.config.eval.sampled_negatives else None
    # max_len=1: the model reads the user id only; `seen` holds the whole history.
    for batch in pipelines.sequence_dataset(self.data, split, max_len=1,
                                            max_targets=self.config.eval.max_targets,
                                            with_seen=True, options=options):
      if negatives is not None:
        batch["negatives"] = negatives[batch["user"] - FIRST_ID]
      yield batch

  # The item bias folds into the inner product: [u, 1] . [v, b] = u.v + b.
  def personal_items(self, model):
    return jnp.concatenate([model.item_vectors(), model.item_bias[...][:, None]], -1)

  def personal_query(self, model, batch, items=None):
    user = model.user_embedding(batch["user"])
    return jnp.concatenate([user, jnp.ones_like(user[:, :1])], -1)
