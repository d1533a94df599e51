import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxrec.config import apply_overrides, load_config
from jaxrec.data import events as ev
from jaxrec.data.vocab import OOV
from jaxrec.errors import UserError
from jaxrec.models.event_tokens import TOKEN_FIELDS, field_sizes
from jaxrec.models.foundation import FoundationModel
from jaxrec.retrieval.bundle import load_bundle
from jaxrec.train.export import export_workdir
from jaxrec.train.restore import restore_model
from jaxrec.train.foundation import (event_nll, future_positions, genre_nll, shift_ahead,
                                     token_weights, weighted_mean)
from jaxrec.train.losses import full_softmax_nll
from jaxrec.train.trainer import Run, build_task, train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RATING, CLICK = int(ev.EventType.RATING), int(ev.EventType.CLICK)


def _config(prepared, *overrides):
  return apply_overrides(load_config(os.path.join(ROOT, "configs", "movielens_foundation.py:smoke")),
                         [f"data.dir={prepared}", *overrides])


# ----------------------------------------------------------------------------- the model

NUM_ITEMS, LENGTH = 40, 12
METADATA = {"genres": 6, "year": 5, "title_words": 30}


def _unsharded(build):
  """Builds a model outside the trainer's partitioner: no mesh, so no eager sharding."""
  with nnx.use_eager_sharding(False):
    return build()


def _tiny_model(**kwargs):
  return _unsharded(lambda: FoundationModel(NUM_ITEMS, METADATA, field_sizes(3, 3), num_genres=6, max_len=LENGTH,
                         dim=16, num_layers=2, num_heads=2, mlp_dim=32, dropout=0.0,
                         title_buckets=16, rngs=nnx.Rngs(0), **kwargs))


def _tiny_batch():
  rng = np.random.default_rng(0)
  inputs = np.zeros((2, LENGTH), np.int32)
  inputs[0] = rng.permutation(np.arange(2, NUM_ITEMS))[:LENGTH]  # distinct items: no echo
  inputs[1, 4:] = rng.permutation(np.arange(2, NUM_ITEMS))[:LENGTH - 4]  # left-padded
  valid = inputs > 0
  fields = {"event": np.full(inputs.shape, RATING), "actions": np.full(inputs.shape, 1 << RATING),
            "value": rng.integers(1, 6, inputs.shape).astype(np.float32),
            "count": np.ones(inputs.shape), "device": rng.integers(1, 3, inputs.shape),
            "locale": rng.integers(1, 3, inputs.shape), "hour": rng.integers(1, 25, inputs.shape),
            "weekday": rng.integers(1, 8, inputs.shape), "gap": rng.integers(1, 30, inputs.shape)}
  fields = {k: jnp.asarray(np.where(valid, v, 0).astype(np.float32 if k == "value" else np.int32))
            for k, v in fields.items()}
  metadata = {"genres": jnp.asarray(rng.integers(0, 6, (NUM_ITEMS, 3)), jnp.int32),
              "year": jnp.asarray(rng.integers(1, 5, NUM_ITEMS), jnp.int32),
              "title_words": jnp.asarray(rng.integers(0, 200, (NUM_ITEMS, 4)), jnp.int32)}
  return jnp.asarray(inputs), fields, metadata


# A different value for each field, in another table row or bucket than any the batch holds.
CHANGES = {"event": lambda x: x * 0 + CLICK, "actions": lambda x: x | (1 << CLICK),
           "value": lambda x: x * 0 + 0.5, "count": lambda x: x * 0 + 9,
           "device": lambda x: 3 - x, "locale": lambda x: 3 - x, "hour": lambda x: x % 24 + 1,
           "weekday": lambda x: x % 7 + 1, "gap": lambda x: x + 5}


@pytest.mark.parametrize("combine", ["sum", "concat"])
def test_each_token_field_changes_states_at_and_after_it_not_before(combine):
  model = _tiny_model(combine=combine)
  inputs, fields, metadata = _tiny_batch()
  run = jax.jit(lambda inputs, fields, metadata: model(inputs, fields,
                                                       model.item_vectors(metadata)))
  base = np.asarray(run(inputs, fields, metadata))
  t = 6
  assert set(CHANGES) == set(TOKEN_FIELDS)
  variants = {}
  for name, change in CHANGES.items():
    changed = dict(fields)
    changed[name] = changed[name].at[0, t].set(change(changed[name][0, t]))
    variants[name] = (inputs, changed, metadata)
  absent = next(i for i in range(2, NUM_ITEMS) if i not in np.asarray(inputs[0]))
  variants["item"] = (inputs.at[0, t].set(absent), fields, metadata)
  item = int(inputs[0, t])
  for name in METADATA:  # the item's metadata changes only that token (items are distinct)
    table = metadata[name]
    new = table.at[item].set((table[item] + 1) % (3 if name == "year" else 6) + 1)
    variants[f"metadata {name}"] = (inputs, fields, {**metadata, name: new})
  for name, args in variants.items():
    out = np.asarray(run(*args))
    np.testing.assert_array_equal(out[0, :t], base[0, :t], err_msg=f"{name} leaked backwards")
    np.testing.assert_array_equal(out[1], base[1], err_msg=f"{name} leaked into another row")
    assert np.abs(out[0, t] - base[0, t]).max() > 1e-4, f"{name} does not reach its own token"
    assert np.abs(out[0, t + 1:] - base[0, t + 1:]).max(axis=-1).min() > 1e-6, \
        f"{name} does not reach every later token"


def test_local_attention_window_covering_the_sequence_equals_full_attention():
  inputs, fields, metadata = _tiny_batch()
  full = _tiny_model()
  local = _tiny_model(window=LENGTH, chunk=4)
  items = full.item_vectors(metadata)
  np.testing.assert_allclose(np.asarray(local(inputs, fields, items)),
                             np.asarray(full(inputs, fields, items)), atol=1e-5)
  # A short window and summary tokens still give finite states, padding rows included.
  windowed = _tiny_model(window=3, num_global=2, chunk=4)
  assert np.all(np.isfinite(np.asarray(windowed(inputs, fields, items))))


def test_unseen_items_get_their_metadata_vector_alone(ml100k):
  run = Run(_config(ml100k.path))
  task, model = run.task, nnx.merge(run.graphdef, run.state)
  unseen = np.flatnonzero(~task.trained[2:]) + 2
  seen = np.flatnonzero(task.trained[2:])[:5] + 2
  assert len(unseen) > 0
  before = np.asarray(task.item_vectors(model))
  meta = {k: jnp.asarray(v[unseen]) for k, v in task.metadata.items()}
  expected = model.items.id_embedding(jnp.full(len(unseen), OOV)) + model.items.metadata(meta)
  np.testing.assert_allclose(before[unseen], np.asarray(expected), atol=1e-6)
  # Their own id rows play no part; a seen item's row does.
  table = model.items.id_embedding.embedding
  table[...] = table[...].at[unseen].add(1.0).at[seen].add(1.0)
  after = np.asarray(task.item_vectors(model))
  np.testing.assert_array_equal(after[unseen], before[unseen])
  np.testing.assert_allclose(after[seen], before[seen] + 1.0, atol=1e-6)


# ----------------------------------------------------------------------------- the objectives


def test_token_weights_follow_event_type_and_engagement():
  table = jnp.ones(ev.NUM_EVENT_TYPES).at[CLICK].set(0.5)
  targets = jnp.array([[0, 5, 6, 7]])
  events = jnp.array([[0, RATING, RATING, CLICK]])
  values = jnp.array([[0.0, 5.0, 1.0, 0.0]])
  weights = np.asarray(token_weights(targets, events, values, table, 0.25))
  np.testing.assert_allclose(weights, [[0.0, 2.25, 1.25, 0.5]])
  nll = jnp.array([[9.0, 1.0, 2.0, 4.0]])
  assert float(weighted_mean(nll, weights)) == pytest.approx((2.25 + 2.5 + 2.0) / 4.0)


def test_shift_ahead_gives_the_item_steps_ahead():
  targets = jnp.array([[0, 3, 4, 5, 6]])
  np.testing.assert_array_equal(shift_ahead(targets, 2), [[4, 5, 6, 0, 0]])
  np.testing.assert_array_equal(shift_ahead(targets, 0), targets)


def test_auxiliary_losses_by_hand():
  # Uniform logits: the cross-entropy is log(number of classes), whatever the target.
  assert float(genre_nll(jnp.zeros((1, 1, 4)), jnp.array([[[1, 2, 0]]]))[0, 0]) == \
      pytest.approx(np.log(4))
  # The target spreads evenly over the item's genres: -(log p1 + log p2) / 2.
  logits = jnp.log(jnp.array([[[0.1, 0.2, 0.3, 0.4]]]))
  assert float(genre_nll(logits, jnp.array([[[1, 3, 0]]]))[0, 0]) == \
      pytest.approx(-(np.log(0.2) + np.log(0.4)) / 2, rel=1e-5)
  assert float(genre_nll(logits, jnp.zeros((1, 1, 3), jnp.int32))[0, 0]) == 0.0  # no genres
  assert float(event_nll(logits, jnp.array([[2]]))[0, 0]) == pytest.approx(-np.log(0.3), rel=1e-5)


def _train_batch(task, seed=0):
  batch = next(iter(task.train_data(seed)))
  return {k: jnp.asarray(v) for k, v in batch.items()}


def test_objective_terms_add_up_by_hand(ml100k):
  """Zero states score every item, genre and event type alike: each term is a log-count."""
  task = build_task(_config(ml100k.path, "loss.horizon=2", "loss.horizon_decay=0.5",
                            "loss.genre_weight=0.3", "loss.event_type_weight=0.2"))
  model = _unsharded(lambda: task.build_model(nnx.Rngs(0)))
  batch = _train_batch(task)
  items = model.item_vectors(task._metadata())
  hidden = jnp.zeros(batch["inputs"].shape + (task.config.model.dim,))
  total = float(task.objective(model, hidden, batch, items, jax.random.key(0)))
  num_genres = model.genre_head.kernel.shape[-1]
  expected = (1 + 0.5) * np.log(task.data.num_items - 2) + 0.3 * np.log(num_genres) \
      + 0.2 * np.log(ev.NUM_EVENT_TYPES)
  assert total == pytest.approx(expected, rel=1e-5)


def test_objective_weights_positions_by_rating(ml100k):
  task = build_task(_config(ml100k.path, "loss.value_weight=0.25"))
  model = _unsharded(lambda: task.build_model(nnx.Rngs(0)))
  batch = _train_batch(task)
  items = model.item_vectors(task._metadata())
  hidden = jax.random.normal(jax.random.key(1), batch["inputs"].shape + (task.config.model.dim,))
  total = float(task.objective(model, hidden, batch, items, jax.random.key(0)))
  nll = np.asarray(full_softmax_nll(hidden, batch["targets"], items))
  # MovieLens tokens are ratings (event weight 1); the weight is 1 + 0.25 × stars.
  weights = np.where(np.asarray(batch["targets"]) > 0,
                     1 + 0.25 * np.asarray(batch["target_value"]), 0)
  assert set(np.unique(np.asarray(batch["target_event"])[weights > 0])) == {RATING}
  assert total == pytest.approx((nll * weights).sum() / weights.sum(), rel=1e-5)
  unweighted = (nll * (weights > 0)).sum() / (weights > 0).sum()
  assert abs(total - unweighted) > 1e-4  # the weights matter


def test_future_positions_stay_within_the_window_and_reach_all_of_it():
  window, shape = 4, (500, 10)
  ahead = np.asarray(future_positions(shape, window, jax.random.key(0)))
  offsets = ahead - np.arange(10)
  assert (offsets >= 0).all() and (ahead <= 9).all() and (offsets < window).all()
  for t in range(10):  # every position inside both the window and the sequence is drawn
    assert set(offsets[:, t]) == set(range(min(window, 10 - t)))
  np.testing.assert_array_equal(future_positions(shape, 1, jax.random.key(1)),
                                np.broadcast_to(np.arange(10), shape))


def test_future_objective_scores_an_item_drawn_ahead(ml100k):
  """loss.future_weight adds, at each position, the loss of the target at a position drawn by
  future_positions (the same key), weighted as that target is."""
  task = build_task(_config(ml100k.path, "loss.future_weight=0.5", "loss.future_window=5"))
  model = _unsharded(lambda: task.build_model(nnx.Rngs(0)))
  batch = _train_batch(task)
  items = model.item_vectors(task._metadata())
  hidden = jax.random.normal(jax.random.key(1), batch["inputs"].shape + (task.config.model.dim,))
  key = jax.random.key(2)
  total = float(task.objective(model, hidden, batch, items, key))
  plain = float(build_task(_config(ml100k.path)).objective(model, hidden, batch, items, key))
  targets = np.asarray(batch["targets"])
  future = np.take_along_axis(targets, np.asarray(
      future_positions(targets.shape, 5, key)), axis=1)
  assert (future[targets > 0] > 0).all()  # left padding: a target always lies ahead
  nll = np.asarray(full_softmax_nll(hidden, jnp.asarray(future), items))
  # Padding positions (no input) draw a target ahead too, but carry no loss.
  assert total == pytest.approx(plain + 0.5 * nll[targets > 0].mean(), rel=1e-5)
  with pytest.raises(UserError, match="future_weight needs the full softmax"):
    build_task(_config(ml100k.path, "loss.future_weight=0.5", "loss.name=sampled_softmax"))


def test_sampled_softmax_with_uniform_q_counts_the_negatives(ml100k):
  """Zero states and a uniform q: the target and every negative tie, so the loss at a position is
  log(1 + negatives that are not the target)."""
  task = build_task(_config(ml100k.path, "loss.name=sampled_softmax", "loss.num_negatives=7"))
  uniform = np.full(task.data.num_items, np.log(1 / (task.data.num_items - 2)), np.float32)
  uniform[:2] = -1e9
  task.log_q = uniform
  model = _unsharded(lambda: task.build_model(nnx.Rngs(0)))
  batch = _train_batch(task)
  items = model.item_vectors(task._metadata())
  hidden = jnp.zeros(batch["inputs"].shape + (task.config.model.dim,))
  key = jax.random.key(3)
  total = float(task.objective(model, hidden, batch, items, key))
  negatives = np.asarray(task.sample_negatives(key)[0])
  targets = np.asarray(batch["targets"])
  hits = (negatives[None, None] == targets[..., None]).sum(-1)
  per_position = np.log(1 + 7 - hits)
  assert total == pytest.approx(per_position[targets > 0].mean(), rel=1e-5)
  full = build_task(_config(ml100k.path))
  full_total = float(full.objective(model, hidden, batch, items, key))
  assert full_total == pytest.approx(np.log(task.data.num_items - 2), rel=1e-5)


@pytest.mark.parametrize("softmax", ["ce", "sampled_softmax"])
def test_watched_items_leave_the_softmax(ml100k, softmax):
  """Zero states tie every item: with loss.exclude_watched each position's loss is the log of
  the items it may still predict, those the user watched before it (in the window or earlier)
  left out, the target kept."""
  task = build_task(_config(ml100k.path, "model.max_len=20", "loss.exclude_watched=True",
                            f"loss.name={softmax}", "loss.num_negatives=300"))
  model = _unsharded(lambda: task.build_model(nnx.Rngs(0)))
  batch = _train_batch(task)
  assert "seen" in batch
  items = model.item_vectors(task._metadata())
  hidden = jnp.zeros(batch["inputs"].shape + (task.config.model.dim,))
  key = jax.random.key(3)
  total = float(task.objective(model, hidden, batch, items, key))
  inputs, targets, seen = (np.asarray(batch[k]) for k in ("inputs", "targets", "seen"))
  candidates = (np.arange(task.data.num_items) if softmax == "ce"
                else np.asarray(task.sample_negatives(key)[0]))
  expected = []
  for b, t in zip(*np.nonzero(targets)):
    watched = set(seen[b][seen[b] > 0]) | set(inputs[b, :t + 1][inputs[b, :t + 1] > 0])
    if softmax == "ce":
      others = len(watched | {targets[b, t]} | {0, 1})
      expected.append(np.log(task.data.num_items - others + 1))
    else:
      left = [c for c in candidates if c not in watched and c != targets[b, t]]
      # sampled softmax subtracts log q: with zero states each logit is -log q of its item
      log_q = task.log_q
      row = np.r_[-log_q[targets[b, t]], -log_q[left]]
      expected.append(np.log(np.exp(row - row.max()).sum()) + row.max() + log_q[targets[b, t]])
  assert total == pytest.approx(np.mean(expected), rel=1e-4)
  plain = build_task(_config(ml100k.path, "model.max_len=20", f"loss.name={softmax}",
                             "loss.num_negatives=300"))
  assert float(plain.objective(model, hidden, batch, items, key)) > total + 0.01


def _sequential_task(prepared, model, *overrides):
  return build_task(apply_overrides(
      load_config(os.path.join(ROOT, "configs", f"movielens_{model}.py:smoke")),
      [f"data.dir={prepared}", *overrides]))


@pytest.mark.parametrize("softmax", ["ce", "sampled_softmax"])
def test_sasrec_leaves_watched_items_out_of_its_softmax_too(ml100k, softmax):
  def sasrec(*overrides):
    return _sequential_task(ml100k.path, "sasrec", f"loss.name={softmax}", *overrides)
  task, plain = sasrec("loss.exclude_watched=True"), sasrec()
  model = _unsharded(lambda: task.build_model(nnx.Rngs(0)))
  batch = _train_batch(task)
  key = jax.random.key(1)
  excluding, keeping = float(task.loss(model, batch, key)), float(plain.loss(model, batch, key))
  assert excluding < keeping - 1e-3  # fewer items in each softmax, the same scores
  if softmax == "ce":  # by hand: the same scores (the same dropout) with watched items masked
    hidden = model(batch["inputs"], rngs=nnx.Rngs(dropout=jax.random.split(key)[0]))
    nll = full_softmax_nll(hidden, batch["targets"], model.item_vectors(), task.excluded(batch))
    has = np.asarray(batch["targets"]) > 0
    assert excluding == pytest.approx(float(np.asarray(nll)[has].mean()), rel=1e-5)
  with pytest.raises(UserError, match="exclude_watched"):
    sasrec("loss.exclude_watched=True", "loss.name=bce")
  if softmax == "ce":  # label smoothing reaches the loss: the same scores, the label spread
    smoothed = sasrec("loss.label_smoothing=0.1")
    hidden = model(batch["inputs"], rngs=nnx.Rngs(dropout=jax.random.split(key)[0]))
    nll = full_softmax_nll(hidden, batch["targets"], model.item_vectors(), smoothing=0.1)
    has = np.asarray(batch["targets"]) > 0
    assert float(smoothed.loss(model, batch, key)) == pytest.approx(
        float(np.asarray(nll)[has].mean()), rel=1e-5)


def test_bert4rec_leaves_the_users_other_items_out_of_its_softmax(ml100k):
  """A bidirectional model reads its whole window: with loss.exclude_watched every masked
  position's softmax leaves out each item of the window and each watched before it (the
  position's own target is kept by the loss)."""
  task = _sequential_task(ml100k.path, "bert4rec", "loss.exclude_watched=True")
  plain = _sequential_task(ml100k.path, "bert4rec")
  batch = _train_batch(task)
  excluded = np.asarray(task.excluded(batch))
  inputs, targets, seen = (np.asarray(batch[k]) for k in ("inputs", "targets", "seen"))
  for b in range(len(inputs)):
    window = np.where(targets[b] > 0, targets[b], inputs[b])  # the masked items restored
    expected = np.zeros(task.data.num_items, bool)
    expected[np.r_[window, seen[b]]] = True
    expected[0] = False  # padding
    assert (excluded[b] == expected[None]).all()
  ids = jnp.array([2, 5, 50, 500])
  np.testing.assert_array_equal(np.asarray(task.excluded(batch, ids)), excluded[..., ids])
  model = _unsharded(lambda: task.build_model(nnx.Rngs(0)))
  key = jax.random.key(1)
  assert float(task.loss(model, batch, key)) < float(plain.loss(model, batch, key)) - 1e-3


def test_config_errors_name_the_fix(ml100k):
  with pytest.raises(UserError, match="ce.*sampled_softmax"):
    build_task(_config(ml100k.path, "loss.name=bce"))
  for bad in (["loss.label_smoothing=1.0"], ["loss.label_smoothing=-0.1"],
              ["loss.label_smoothing=0.1", "loss.name=sampled_softmax"]):
    with pytest.raises(UserError, match="label_smoothing"):
      build_task(_config(ml100k.path, *bad))
  with pytest.raises(UserError, match="unknown event type 'watch'"):
    config = _config(ml100k.path)
    config.unlock()
    config.loss.event_weights.watch = 2.0
    build_task(config)
  with pytest.raises(UserError, match="item_metadata names colour.*genres, title_words, year"):
    build_task(_config(ml100k.path, "model.item_metadata=genres,colour"))


def test_item_metadata_selects_the_fields_of_an_item_vector(ml100k):
  task = build_task(_config(ml100k.path, "model.item_metadata=genres"))
  assert set(task.metadata) == {"genres"}
  model = _unsharded(lambda: task.build_model(nnx.Rngs(0)))
  assert set(model.items.metadata_tables) == {"genres"}
  assert set(build_task(_config(ml100k.path)).metadata) == {"genres", "year", "title_words"}


# ----------------------------------------------------------------------------- end to end


@pytest.fixture(scope="module")
def trained_workdir(ml100k, tmp_path_factory):
  """A smoke run through every objective: horizon, aux heads, rating weights, sampled softmax,
  local attention with summary tokens, concatenated fields."""
  workdir = str(tmp_path_factory.mktemp("foundation"))
  results = train(_config(ml100k.path, "loss.horizon=3", "loss.genre_weight=0.1",
                          "loss.event_type_weight=0.1", "loss.value_weight=0.2",
                          "loss.name=sampled_softmax", "loss.num_negatives=64",
                          "model.window=8", "model.num_global=2", "model.chunk=8",
                          "model.combine=concat"), workdir)
  return workdir, results


@pytest.mark.slow
def test_smoke_config_trains_and_evaluates(trained_workdir):
  _, results = trained_workdir
  assert results["test"]["num_users"] == 943 and results["skipped_steps"] == 0
  assert 0 <= results["test"]["ndcg@10"] <= 1 and "full ranking" in results["protocol"]


@pytest.mark.slow
def test_export_into_a_retrieval_bundle_that_loads(trained_workdir, tmp_path):
  workdir, _ = trained_workdir
  path, manifest = export_workdir(workdir, str(tmp_path / "exports"))
  bundle = load_bundle(path)
  assert bundle.manifest["metadata"]["source"]["task"] == "foundation"
  run = restore_model(workdir)
  model = nnx.merge(run.graphdef, run.state)
  items = np.asarray(run.task.item_vectors(model))
  np.testing.assert_allclose(bundle.items, items[2:], atol=1e-6)
  batch = next(iter(run.task.eval_batches("test")))
  batch.pop("weight")
  queries = np.asarray(jax.jit(run.task.query_vectors)(model, batch))[:16]
  ids, _ = bundle.search(queries, 10)
  exact = np.argsort(-(queries @ items[2:].T), axis=1)[:, :10] + 2
  np.testing.assert_array_equal(ids, exact)
