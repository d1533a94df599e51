import numpy as np
import pytest

from jaxrec.data import pipelines as P
from jaxrec.errors import UserError


def _options(**kw):
  return P.PipelineOptions(**{"batch_size": 64, "seed": 3, "num_epochs": None, **kw})


def _take(dataset, n):
  it = iter(dataset)
  return [next(it) for _ in range(n)]


def _equal(a, b):
  if isinstance(a, dict):
    return a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
  return np.array_equal(a, b)


BUILDERS = {
    "sequence": lambda ds, **kw: P.sequence_dataset(ds, max_len=50, options=_options(**kw)),
    "masked": lambda ds, **kw: P.sequence_dataset(ds, max_len=50, objective="masked",
                                                  options=_options(**kw)),
    "pairs": lambda ds, **kw: P.pair_dataset(ds, options=_options(**kw)),
    "ranking": lambda ds, **kw: P.ranking_dataset(ds, options=_options(**kw)),
}


@pytest.mark.parametrize("kind", BUILDERS)
def test_deterministic_given_a_seed(ml100k, kind):
  first = _take(BUILDERS[kind](ml100k), 3)
  again = _take(BUILDERS[kind](ml100k), 3)
  other = _take(BUILDERS[kind](ml100k, seed=4), 3)
  assert all(_equal(a, b) for a, b in zip(first, again))
  assert not all(_equal(a, b) for a, b in zip(first, other))


@pytest.mark.parametrize("kind", BUILDERS)
def test_restored_iterator_yields_exactly_what_an_uninterrupted_one_would(ml100k, kind):
  uninterrupted = _take(BUILDERS[kind](ml100k), 25)  # 64 x 25 crosses an epoch of 943 users
  it = iter(BUILDERS[kind](ml100k))
  for _ in range(11):
    next(it)
  state = it.get_state()
  restored = iter(BUILDERS[kind](ml100k))
  restored.set_state(state)
  resumed = [next(restored) for _ in range(14)]
  assert all(_equal(a, b) for a, b in zip(uninterrupted[11:], resumed))


def test_next_item_windows(ml100k):
  batch = _take(BUILDERS["sequence"](ml100k), 1)[0]
  inputs, targets = batch["inputs"], batch["targets"]
  assert inputs.shape == targets.shape == (64, 50)
  # targets are the inputs shifted by one; padding lines up on the left
  both = targets[:, :-1] > 0
  assert np.array_equal(inputs[:, 1:][both], targets[:, :-1][both])
  assert np.all((inputs == 0) == (targets == 0))
  lengths = ml100k.splits.train_end[batch["user"] - 2]
  assert np.array_equal((inputs > 0).sum(1), np.minimum(lengths - 1, 50))


def test_sliding_windows_of_long_histories_move_between_epochs(ml100k):
  long_user = int(np.argmax(ml100k.splits.train_end))
  seen = set()
  for batch in _take(P.sequence_dataset(ml100k, max_len=20, options=_options(batch_size=943)), 6):
    row = np.flatnonzero(batch["user"] == long_user + 2)[0]
    seen.add(tuple(batch["inputs"][row]))
  assert len(seen) > 1
  tokens = ml100k.user_tokens([long_user + 2])[0]["item"]
  for window in seen:  # each window is a contiguous run of the user's training history
    text = ",".join(map(str, tokens[:ml100k.splits.train_end[long_user]]))
    assert ",".join(map(str, window)) in text


def test_masked_objective(ml100k):
  batch = _take(BUILDERS["masked"](ml100k), 1)[0]
  masked = batch["inputs"] == ml100k.num_items
  assert masked.any(axis=1).all()
  assert np.array_equal(masked, batch["targets"] > 0)
  assert 0.1 < masked.sum() / (batch["inputs"] > 0).sum() < 0.3


@pytest.mark.parametrize("split", ["valid", "test"])
def test_evaluation_covers_every_user_once_with_the_held_out_item(ml100k, split):
  batches = list(P.sequence_dataset(ml100k, split, max_len=30,
                                    options=P.PipelineOptions(batch_size=100)))
  weight = np.concatenate([b["weight"] for b in batches])
  users = np.concatenate([b["user"] for b in batches])[weight > 0]
  assert sorted(users.tolist()) == list(range(2, 945))
  index = ml100k.splits.train_end if split == "valid" else ml100k.splits.valid_end
  for b in batches[:2]:
    for user, inputs, target in zip(b["user"], b["inputs"], b["targets"][:, 0]):
      tokens = ml100k.user_tokens([user])[0]["item"]
      assert target == tokens[index[user - 2]]
      assert inputs[-1] == tokens[index[user - 2] - 1]  # the history ends just before it


def test_shards_partition_the_users(ml100k):
  users = []
  for shard in range(3):
    data = P.sequence_dataset(ml100k, "test", max_len=5, options=P.PipelineOptions(
        batch_size=50, shard_index=shard, shard_count=3))
    users.append({int(u) for b in data for u, w in zip(b["user"], b["weight"]) if w})
  assert set.union(*users) == set(range(2, 945))
  assert sum(len(u) for u in users) == 943


def test_pairs_carry_log_q_and_user_features(ml100k):
  batch = _take(BUILDERS["pairs"](ml100k), 1)[0]
  counts = ml100k.item_counts
  np.testing.assert_allclose(batch["item_log_q"], np.log(counts[batch["item"]] / counts.sum()),
                             rtol=1e-5)
  assert np.array_equal(batch["user_gender"], ml100k.user_features["gender"][batch["user"]])


def test_ranking_examples(ml100k):
  batch = _take(BUILDERS["ranking"](ml100k), 1)[0]
  assert batch["dense"].shape == (64, 8) and np.isfinite(batch["dense"]).all()
  assert batch["multi_hot"]["item_genres"].shape == (64, 8)
  labels = batch["labels"]
  assert np.all(labels["click"] == 1)  # every MovieLens token is a rating
  assert np.array_equal(labels["like"], (labels["value"] >= 4).astype(np.float32))


def test_bad_pipeline_arguments(ml100k):
  with pytest.raises(UserError, match="unknown split"):
    P.sequence_dataset(ml100k, "dev")
  with pytest.raises(UserError, match="objective"):
    P.sequence_dataset(ml100k, objective="causal")
  with pytest.raises(UserError, match="batch size"):
    P.sequence_dataset(ml100k, options=P.PipelineOptions(batch_size=10_000))
