"""Row-sharded embedding tables on 8 fake CPU devices: placement, lookups without gathering a
table, the sparse train step equal to one device's, and checkpoints restored onto other meshes."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxrec.models.dlrm import DLRM, DLRMSpec
from jaxrec.models.embedding import ShardedEmbedding
from jaxrec.parallel.partitioner import Partitioner
from jaxrec.train.checkpoint import Checkpointer
from jaxrec.train.ranking import head_loss
from jaxrec.models.row_optimizers import RowOptimizer
from jaxrec.train.step import make_train_step, trainable

SPEC = DLRMSpec(single_hot={"user": 300, "item": 1000, "hour": 25}, multi_hot={"genres": 20},
                num_dense=3, heads=("click", "like"), dim=8, bottom=(16,), top=(32,),
                interaction="dcn", wide=True, stack_below=100)  # hour and genres stacked
OPTIMIZER = RowOptimizer("rowwise_adagrad", 0.1)
BATCH = 32


def batch(seed=0):
  rng = np.random.default_rng(seed)
  ids = lambda n, *shape: rng.integers(0, n, (BATCH, *shape)).astype(np.int32)
  return {"sparse": {"user": ids(300), "item": ids(1000), "hour": ids(25)},
          "multi_hot": {"genres": ids(20, 4)}, "dense": rng.normal(size=(BATCH, 3)).astype("f4"),
          "labels": {"click": ids(2).astype("f4"), "like": ids(2).astype("f4")}}


def loss_fn(model, batch, key, rows=None):
  out = model(batch, rows)
  return sum(jnp.mean(head_loss("binary", out[:, i], batch["labels"][h]))
             for i, h in enumerate(SPEC.heads))


def partitioner(shape):
  return Partitioner(shape, devices=jax.devices()[:int(np.prod(shape))])


@functools.lru_cache(maxsize=None)
def trained(shape, steps=3):
  """A DLRM trained `steps` steps on `shape`'s mesh: (state as numpy, losses, partitioner...)."""
  part = partitioner(shape)
  graphdef, state, shardings = part.init(lambda: DLRM(SPEC, rngs=nnx.Rngs(0),
                                                      row_optimizer=OPTIMIZER))
  tx = optax.adam(1e-2)
  opt_state = tx.init(trainable(state))
  step = part.jit(make_train_step(graphdef, tx, loss_fn, 0, OPTIMIZER), donate_argnums=(0, 1))
  losses = []
  for i in range(steps):
    state, opt_state, out = step(state, opt_state, part.shard_inputs(batch(i)), jnp.int32(i))
    losses.append(float(out["loss"]))
  return state, opt_state, losses, part


def test_each_device_holds_an_eighth_of_a_tables_rows():
  part = partitioner((1, 8))
  _, state, _ = part.init(lambda: ShardedEmbedding(1000, 8, rngs=nnx.Rngs(0),
                                                   row_optimizer=OPTIMIZER))
  table, accumulator = state["table"][...], state["accumulator"][...]
  assert table.shape == (1024, 8)
  for shard in table.addressable_shards:
    assert shard.data.shape == (128, 8)
  assert {s.data.shape for s in accumulator.addressable_shards} == {(128,)}
  assert len({s.index[0].start for s in table.addressable_shards}) == 8


def test_lookup_never_gathers_the_table():
  part = partitioner((2, 4))
  graphdef, state, _ = part.init(lambda: ShardedEmbedding(100_000, 8, rngs=nnx.Rngs(0)))
  ids = part.shard_inputs(np.arange(BATCH, dtype=np.int32) * 3000)
  lookup = lambda state, ids: nnx.merge(graphdef, state)(ids)
  with jax.set_mesh(part.mesh):
    hlo = jax.jit(lookup).lower(state, ids).compile().as_text()
  # The only cross-device traffic is the [batch, dim] rows: no collective carries table rows.
  collectives = [line for line in hlo.splitlines()
                 if any(op in line for op in ("all-gather", "all-to-all", "all-reduce"))]
  assert collectives and all("100096" not in line and "25024" not in line
                             for line in collectives), collectives
  np.testing.assert_allclose(part.jit(lookup)(state, ids),
                             np.asarray(state["table"][...])[np.asarray(ids)], rtol=1e-6)


@pytest.mark.parametrize("shape", [(2, 4), (1, 8), (8, 1)])
def test_sharded_training_matches_one_device(shape):
  single, _, single_losses, _ = trained((1, 1))
  sharded, _, sharded_losses, _ = trained(shape)
  np.testing.assert_allclose(sharded_losses, single_losses, rtol=1e-5)
  for a, b in zip(jax.tree.leaves(single), jax.tree.leaves(sharded)):
    np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-6)


def test_untouched_rows_keep_their_values():
  part = partitioner((2, 4))
  initial = part.init(lambda: DLRM(SPEC, rngs=nnx.Rngs(0), row_optimizer=OPTIMIZER))[1]
  initial = np.asarray(initial["tables"]["item"]["table"][...])
  state = trained((2, 4))[0]
  table = np.asarray(state["tables"]["item"]["table"][...])
  touched = np.unique([batch(i)["sparse"]["item"] for i in range(3)])
  untouched = np.setdiff1d(np.arange(len(table)), touched)
  np.testing.assert_array_equal(table[untouched], initial[untouched])
  assert not np.allclose(table[touched], initial[touched])


@pytest.mark.parametrize("saved_on, shape", [((2, 4), (1, 1)), ((2, 4), (1, 4)),
                                              ((2, 4), (2, 2)), ((1, 1), (1, 4))])
def test_checkpoint_restores_on_another_mesh(tmp_path, saved_on, shape):
  state, opt_state, _, _ = trained(saved_on)
  saver = Checkpointer(str(tmp_path), keep=1, metric="m", async_save=False)
  saver.save(3, state, opt_state, {"step": 3}, {"m": 1.0})
  saver.close()
  part = partitioner(shape)
  _, fresh, shardings = part.init(lambda: DLRM(SPEC, rngs=nnx.Rngs(1), row_optimizer=OPTIMIZER))
  fresh_opt = optax.adam(1e-2).init(trainable(fresh))
  restored, restored_opt, loop = Checkpointer(str(tmp_path), 1, "m").restore(3, fresh, fresh_opt)
  assert loop["step"] == 3
  for a, b in zip(jax.tree.leaves((state, opt_state)), jax.tree.leaves((restored, restored_opt))):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
  table = restored["tables"]["item"]["table"][...]
  assert table.sharding.mesh.shape == part.mesh.shape
  assert table.addressable_shards[0].data.shape[0] == 1024 // part.mesh.shape["model"]
