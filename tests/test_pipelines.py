import numpy as np
import pytest

from jaxrec.data import pipelines as P
from jaxrec.data import ranking_negatives as N
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
    "ranking_negatives": lambda ds, **kw: P.ranking_dataset(ds, negatives_per_positive=3,
                                                            options=_options(**kw)),
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


def test_training_windows_carry_the_items_watched_before_them(ml100k):
  batch = _take(P.sequence_dataset(ml100k, max_len=20, with_seen=True,
                                   options=_options(batch_size=943)), 1)[0]
  width = batch["seen"].shape[1]
  assert width == 1 << int(ml100k.splits.train_end.max() - 21).bit_length()  # fixed per dataset
  moved = 0
  for row, user in enumerate(batch["user"]):
    tokens = ml100k.user_tokens([user])[0]["item"]  # MovieLens: each item once per user
    start = int(np.flatnonzero(tokens == batch["inputs"][row, -1])[0]) - 19
    seen = batch["seen"][row]
    before = np.sort(tokens[:max(start, 0)])
    assert np.array_equal(seen[width - len(before):], before)
    assert not seen[:width - len(before)].any()  # zeros in front: sorted rows
    moved += start > 0
  assert moved > 100  # long histories' windows start later than their first token
  masked = _take(P.sequence_dataset(ml100k, max_len=20, objective="masked", with_seen=True,
                                    options=_options(batch_size=943)), 1)[0]
  for row, user in enumerate(masked["user"]):  # a masked window: the same items before it
    tokens = ml100k.user_tokens([user])[0]["item"]
    window = np.where(masked["targets"][row] > 0, masked["targets"][row], masked["inputs"][row])
    start = int(np.flatnonzero(tokens == window[window > 0][0])[0])
    seen = masked["seen"][row]
    assert np.array_equal(seen[seen > 0], np.sort(tokens[:start]))


def test_shuffle_ties_reorders_only_what_shares_a_timestamp(ml100k):
  options = _options(batch_size=943)
  plain, shuffled = (_take(P.sequence_dataset(
      ml100k, max_len=1000, shuffle_ties=flag, fields=("timestamp", "gap"),
      target_fields=("timestamp",), options=options), 1)[0] for flag in (False, True))
  # Each window holds a user's whole training history: its inputs, then the last target.
  items, stamps = ({k: np.concatenate([b[a], b[t][:, -1:]], axis=1) for k, b in
                    (("plain", plain), ("shuffled", shuffled))}
                   for a, t in (("inputs", "targets"), ("timestamp", "target_timestamp")))
  np.testing.assert_array_equal(plain["user"], shuffled["user"])
  np.testing.assert_array_equal(stamps["plain"], stamps["shuffled"])
  np.testing.assert_array_equal(plain["gap"], shuffled["gap"])  # the first of a run keeps it
  moved = items["plain"] != items["shuffled"]
  assert 0.2 < moved[items["plain"] > 0].mean() < 0.6  # half of ML-100K's ratings share a second
  for row in np.flatnonzero(moved.any(axis=1))[:50]:
    for stamp in np.unique(stamps["plain"][row][moved[row]]):
      same = stamps["plain"][row] == stamp
      assert same.sum() > 1
      assert sorted(items["plain"][row, same]) == sorted(items["shuffled"][row, same])


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


def _ranking_valid(ds, negatives, batch_size, seed=0, **kw):
  return list(P.ranking_dataset(ds, "valid", negatives_per_positive=negatives,
                                options=P.PipelineOptions(batch_size=batch_size, seed=seed), **kw))


def _concat(batches):
  if isinstance(batches[0], dict):
    return {k: _concat([b[k] for b in batches]) for k in batches[0]}
  return np.concatenate(batches)


def _expand(plain, out, pos):
  """The plain examples placed at the positive rows of `out`, its negative rows copied from out."""
  if isinstance(plain, dict):
    return {k: _expand(plain[k], out[k], pos) for k in plain}
  full = out.copy()
  full[pos] = plain
  return full


def test_ranking_negatives_are_unrated_items_shown_in_their_positives_context(ml100k):
  plain = _concat(_ranking_valid(ml100k, 0, 16))
  batches = _ranking_valid(ml100k, 3, 64)
  assert all(b["dense"].shape == (64, 8) and b["group"].shape == (64,) for b in batches)
  out = _concat(batches)
  slot = np.arange(len(out["group"])) % 4
  pos, neg = slot == 0, slot > 0
  # The positives are exactly the examples (features, labels, weights) of the plain pipeline.
  assert _equal({k: v for k, v in out.items() if k != "group"}, _expand(plain, out, pos))
  assert all(np.all(v[neg] == 0) for v in out["labels"].values())
  assert np.array_equal(out["group"], out["sparse"]["user"])
  real = out["weight"] > 0
  items, users = out["sparse"]["item"], out["sparse"]["user"]
  assert items[neg].min() >= 2 and items.max() < ml100k.num_items
  history = {u: set(ml100k.user_tokens([u])[0]["item"].tolist()) for u in np.unique(users)}
  assert not any(i in history[u] for u, i in zip(users[neg], items[neg]))
  # Item features follow the sampled item; context features are the positive's.
  features = ml100k.item_features
  assert np.array_equal(out["multi_hot"]["item_genres"], features["genres"][items])
  np.testing.assert_allclose(out["dense"][:, 0], np.log1p(ml100k.item_counts[items]), rtol=1e-6)
  owner = np.repeat(np.flatnonzero(pos), 4)
  for name, values in out["sparse"].items():
    if name != "item" and not name.startswith("item_"):
      assert np.array_equal(values, values[owner]), name
  assert np.array_equal(out["dense"][:, 1:7], out["dense"][owner, 1:7])
  timestamp = np.array([ml100k.user_tokens([u])[0]["timestamp"][ml100k.splits.train_end[u - 2]]
                        for u in users[pos][real[pos]]]).repeat(4)
  age = (timestamp - features["first_seen"][items[real]]) / 86400
  np.testing.assert_allclose(out["dense"][real, 7], np.log1p(np.maximum(age, 0)), rtol=1e-5)


def test_evaluation_negatives_are_the_same_every_pass_and_padding_weighs_nothing(ml100k):
  first, again = _ranking_valid(ml100k, 3, 64), _ranking_valid(ml100k, 3, 64)
  assert len(first) == len(again) and all(_equal(a, b) for a, b in zip(first, again))
  other = _ranking_valid(ml100k, 3, 64, seed=1)
  assert not _equal(first[0]["sparse"]["item"], other[0]["sparse"]["item"])
  weight = np.concatenate([b["weight"] for b in first])
  assert weight.sum() == 4 * 943 and weight[-1] == 0  # 943 tokens do not fill 59 batches of 16
  assert np.all(weight.reshape(-1, 4) == weight.reshape(-1, 4)[:, :1])  # a group pads as a whole


def test_ranking_negatives_on_training_batches(ml100k):
  batch = _take(P.ranking_dataset(ml100k, negatives_per_positive=4,
                                  options=_options(batch_size=100)), 1)[0]
  assert batch["dense"].shape == (100, 8) and batch["sparse"]["item"].shape == (100,)
  assert batch["labels"]["click"].mean() == 0.2 and "weight" not in batch


def test_popularity_negatives_are_unrated_and_more_popular(ml100k):
  def negatives(sampling):
    out = _concat(_ranking_valid(ml100k, 3, 64, negative_sampling=sampling))
    neg = np.arange(len(out["group"])) % 4 > 0
    return out["sparse"]["user"][neg], out["sparse"]["item"][neg]
  users, items = negatives("popularity")
  for u in np.unique(users)[:50]:
    assert not np.isin(items[users == u], ml100k.user_tokens([u])[0]["item"]).any()
  counts = ml100k.item_counts
  assert counts[items].mean() > 2 * counts[negatives("uniform")[1]].mean()


def test_bad_ranking_negative_arguments(ml100k):
  with pytest.raises(UserError, match="multiple of 5, e.g. 60"):
    P.ranking_dataset(ml100k, negatives_per_positive=4, options=P.PipelineOptions(batch_size=64))
  with pytest.raises(UserError, match="whole number"):
    P.ranking_dataset(ml100k, negatives_per_positive=-1)
  with pytest.raises(UserError, match="negative sampling"):
    P.ranking_dataset(ml100k, negatives_per_positive=1, negative_sampling="hard")


@pytest.mark.parametrize("sampling", ["uniform", "popularity"])
@pytest.mark.parametrize("split", ["valid", "test"])
def test_ranking_negatives_already_existed_at_the_positives_time(ml100k, sampling, split):
  # A negative first seen after the impression would carry an age of 0 that gives it away.
  out = _concat(list(P.ranking_dataset(ml100k, split, negatives_per_positive=3,
                                       negative_sampling=sampling,
                                       options=P.PipelineOptions(batch_size=64))))
  real = out["weight"].reshape(-1, 4)[:, 0] > 0
  users = out["sparse"]["user"].reshape(-1, 4)[real, 0]
  items = out["sparse"]["item"].reshape(-1, 4)[real, 1:]
  index = ml100k.splits.train_end if split == "valid" else ml100k.splits.valid_end
  first_seen = ml100k.item_features["first_seen"]
  checked = 0
  for user, negatives in zip(users, items):
    tokens = ml100k.user_tokens([user])[0]
    time = tokens["timestamp"][index[user - 2]]
    available = np.setdiff1d(np.flatnonzero((first_seen >= 0) & (first_seen <= time)), [0, 1])
    if np.setdiff1d(available, tokens["item"]).size:
      assert np.all(np.isin(negatives, available)), (user, negatives)
      checked += 1
  assert checked > 900
  # On training batches the age feature (dense column 7, 0 when the item is new or from the future)
  # must no longer tell negatives apart: far fewer are 0 than among positives.
  batches = _take(P.ranking_dataset(ml100k, negatives_per_positive=4, negative_sampling=sampling,
                                    options=_options(batch_size=1000)), 10)
  age = np.concatenate([b["dense"][:, 7] for b in batches]).reshape(-1, 5)
  assert (age[:, 1:] == 0).mean() < (age[:, 0] == 0).mean()


def _brute_force_pool(first_seen, history, time):
  """Items first seen (not -1) by `time` and not in the history; else every unrated item."""
  items = np.arange(2, len(first_seen))
  unrated = items[~np.isin(items, history)]
  available = unrated[(first_seen[unrated] >= 0) & (first_seen[unrated] <= time)]
  return available if available.size else unrated


def test_negative_sampler_draws_uniformly_among_available_unrated_items():
  rng = np.random.default_rng(0)
  num_items = 30
  first_seen = np.concatenate([[-1, -1], rng.integers(0, 100, num_items - 2)])
  first_seen[[5, 9]] = -1  # never seen: never available, only a fallback
  histories = [np.array([0, 1, 3, 4]), rng.choice(np.arange(2, num_items), 20, replace=False),
               np.flatnonzero((first_seen >= 0) & (first_seen <= 50))]  # all of t <= 50
  times = [100, 60, 40]
  owner = np.repeat(np.arange(3), 3000)
  sampler = N.NegativeSampler(num_items, "uniform", None, first_seen)
  out = sampler.sample(histories, owner, N.example_keys(1, np.arange(len(owner))), 2,
                       np.repeat(times, 3000))
  for user in range(3):
    pool = _brute_force_pool(first_seen, histories[user], times[user])
    items, counts = np.unique(out[owner == user], return_counts=True)
    assert np.array_equal(items, pool)  # every candidate drawn, nothing else
    expected = counts.sum() / len(pool)
    assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected))
  # The fallback: user 2 had rated every item of its time, so its negatives are from later.
  assert np.all((first_seen[out[owner == 2]] > 40) | (first_seen[out[owner == 2]] == -1))
  # Without timestamps every unrated item is a candidate, as before availability was known.
  plain = sampler.sample(histories, owner, N.example_keys(1, np.arange(len(owner))), 2)
  assert np.array_equal(np.unique(plain[owner == 0]),
                        np.setdiff1d(np.arange(2, num_items), histories[0]))
