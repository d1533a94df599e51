"""The foundation model's item side for new items: an item no training token names is its
metadata alone in training as in evaluation, and no gradient flows through it, so the metadata
rows only new items carry are not pushed down by their never being a target."""

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxrec.models.event_tokens import field_sizes
from jaxrec.models.foundation import FoundationModel
from jaxrec.train.foundation import FoundationTask
from jaxrec.train.losses import full_softmax_nll

# Items 2..5 (0 padding, 1 OOV); item 5 alone has year 3 and never trained.
METADATA = {"year": jnp.asarray([0, 0, 1, 1, 2, 3]),
            "genres": jnp.asarray([[0, 0], [0, 0], [1, 0], [2, 1], [1, 0], [2, 0]])}
TRAINED = jnp.asarray([False, False, True, True, True, False])


def _model():
  with nnx.use_eager_sharding(False):  # no partitioner here: no mesh to shard onto
    return FoundationModel(6, {"year": 4, "genres": 3}, field_sizes(2, 2), 3, max_len=4, dim=8,
                           num_layers=1, num_heads=1, mlp_dim=16, rngs=nnx.Rngs(0))


def _year_gradient(learn):
  model = _model()
  query = jax.random.normal(jax.random.key(1), (1, 2, 8))
  targets = jnp.asarray([[2, 4]])

  def loss(model):
    items = model.item_vectors(METADATA, TRAINED, learn)
    return full_softmax_nll(query, targets, items).sum()

  grads = nnx.grad(loss)(model)
  return np.asarray(grads["items"]["metadata_tables"]["year"]["embedding"][...])


def test_an_untrained_item_passes_no_gradient_to_the_metadata_only_it_carries():
  assert np.abs(_year_gradient(None)[3]).sum() > 0  # as a negative it would be pushed down
  learned = _year_gradient(TRAINED)
  np.testing.assert_array_equal(learned[3], 0)
  assert np.abs(learned[1]).sum() > 0 and np.abs(learned[2]).sum() > 0  # trained years learn


def test_learn_changes_no_vector():
  model = _model()
  np.testing.assert_array_equal(model.item_vectors(METADATA, TRAINED, TRAINED),
                                model.item_vectors(METADATA, TRAINED))
  ids = jnp.asarray([5, 2])
  np.testing.assert_array_equal(model.vectors_of(ids, METADATA, TRAINED[ids], TRAINED[ids]),
                                model.item_vectors(METADATA, TRAINED)[ids])


def test_id_masks_drop_ids_of_trained_items_only_and_never_keep_an_untrained_id():
  task = FoundationTask.__new__(FoundationTask)  # id_masks reads only these two fields
  task.trained = np.asarray(TRAINED)
  task.config = type("C", (), {"model": type("M", (), {"id_dropout": 0.5})})()
  keeps = np.stack([np.asarray(task.id_masks(jax.random.key(seed))[0]) for seed in range(200)])
  learn = np.asarray(task.id_masks(jax.random.key(0))[1])
  np.testing.assert_array_equal(learn, TRAINED)
  assert not keeps[:, ~np.asarray(TRAINED)].any()
  np.testing.assert_allclose(keeps[:, [2, 3, 4]].mean(), 0.5, atol=0.06)
