"""Grain pipelines over a prepared dataset: sequence windows, retrieval pairs, ranking examples.

All three are built the same way, which is what makes them fast and exactly resumable:
a MapDataset of integer indices (this process's users or tokens) -> shuffle per epoch -> repeat
-> batch the indices -> one vectorised numpy function turns a batch of indices into a batch of
arrays, reading the users' records from the process's own token shards (storage.host_part: shards
i with i % processes == process index), so no process opens or indexes another's data. Indices
count within the process's share, in user id order: with one process, exactly as before the
data was sharded. Per-user arrays (split boundaries, ids) stay whole on every process, as the
user vocabulary does; token-sized ones are the process's own. Randomness (window offsets, masks)
comes from Grain's per-element seeded rng, so an iterator restored from `get_state()` yields exactly
what an uninterrupted one would.
"""

from __future__ import annotations

import dataclasses
import functools

import grain
import numpy as np

from jaxrec.data import events as ev
from jaxrec.data import ranking_negatives as negatives
from jaxrec.data.shards import HostPart
from jaxrec.data.storage import PreparedDataset, decode
from jaxrec.data.tokenize import NUM_GAP_BUCKETS, TOKEN_DTYPE
from jaxrec.data.vocab import FIRST_ID
from jaxrec.errors import UserError

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class PipelineOptions:
  batch_size: int = 256
  seed: int = 0
  num_epochs: int | None = 1  # None repeats forever (training); evaluation always makes one pass
  shard_index: int | None = None  # default: jax.process_index()
  shard_count: int | None = None  # default: jax.process_count()
  read_threads: int = 2


def process_batch_size(global_batch_size: int) -> int:
  """A config's batch size is global (every host's rows together); each process's pipeline
  builds its share of it."""
  import jax
  count = jax.process_count()
  if global_batch_size % count:
    raise UserError(f"batch size {global_batch_size} does not split over the {count} processes "
                    f"of this job: use a multiple of {count}.")
  return global_batch_size // count


class _Records:
  """Reads this process's users' token records by their index in its share (HostPart.records);
  opened lazily so the pipeline can be pickled to workers."""

  def __init__(self, part: HostPart):
    self.paths, self.positions = part.paths, part.positions
    self._source = None

  def __call__(self, local_indices) -> list[np.ndarray]:
    if self._source is None:
      self._source = grain.sources.ArrayRecordDataSource(self.paths)
    positions = self.positions[np.asarray(local_indices, np.int64)]
    return [decode(r) for r in self._source.__getitems__(positions.tolist())]

  def __getstate__(self):
    return {"paths": self.paths, "positions": self.positions, "_source": None}


def _host_part(ds: PreparedDataset, options: PipelineOptions) -> HostPart:
  import jax  # only for the process layout; the pipeline itself never touches devices
  index = jax.process_index() if options.shard_index is None else options.shard_index
  count = jax.process_count() if options.shard_count is None else options.shard_count
  return ds.host_part(index, count)


def _check_split(split: str) -> None:
  if split not in SPLITS:
    raise UserError(f"unknown split {split!r}: use one of {', '.join(SPLITS)}.")


def _split_range(ds: PreparedDataset, split: str) -> tuple[np.ndarray, np.ndarray]:
  """Per-user [lo, hi) token positions of a split's targets."""
  s = ds.splits
  if split == "train":
    return np.zeros_like(s.train_end), s.train_end
  if split == "valid":
    return s.train_end, s.valid_end
  return s.valid_end, s.length


def _index_dataset(indices: np.ndarray, largest: int, options: PipelineOptions,
                   train: bool) -> grain.MapDataset:
  """Batches of this process's indices, reshuffled every epoch when training. `largest`: the
  number of examples of the process with the most (sized from per-user arrays, not read).

  Shuffling and batching happen here, once per batch, rather than through Grain's per-element
  shuffle: its per-element index bookkeeping cost more than building the batches themselves.
  """
  indices = np.asarray(indices)
  size = options.batch_size
  if not train:
    # Every process makes the same number of batches (the largest share's), padding the rest,
    # so no process waits at a collective for a batch another never sends.
    return grain.MapDataset.range((largest + size - 1) // size).map(
        lambda j: indices[j * size:(j + 1) * size])
  per_epoch = len(indices) // size
  if per_epoch == 0:
    raise UserError(f"batch size {size} is larger than the {len(indices)} training examples of "
                    "this process: lower the batch size.")

  @functools.lru_cache(maxsize=2)
  def permutation(epoch: int) -> np.ndarray:
    return np.random.default_rng((options.seed, epoch)).permutation(len(indices))

  def take(index: int) -> np.ndarray:
    epoch, j = divmod(index, per_epoch)
    return indices[permutation(epoch)[j * size:(j + 1) * size]]

  return grain.MapDataset.range(per_epoch).repeat(options.num_epochs).map(take)


def _finish(data: grain.MapDataset, options: PipelineOptions) -> grain.IterDataset:
  return data.to_iter_dataset(grain.ReadOptions(num_threads=options.read_threads,
                                                prefetch_buffer_size=4))


def _pad_batch(indices: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Evaluation keeps every example: the last short batch is padded and flagged by `weight`."""
  weight = np.zeros(batch_size, np.float32)
  weight[:len(indices)] = 1
  return np.resize(indices, batch_size) if len(indices) else np.zeros(batch_size, int), weight


# ----------------------------------------------------------------------------- sequences


def window_batch(histories: list[np.ndarray], max_len: int,
                 fields: tuple[str, ...] = ()) -> dict[str, np.ndarray]:
  """Each history's most recent `max_len` tokens as a sequence model's input, laid out as
  `sequence_dataset` lays out evaluation windows: `inputs` [B, max_len] left-padded item ids
  and one [B, max_len] array per token field. Serving builds its queries with this."""
  out = {"inputs": np.zeros((len(histories), max_len), np.int32)}
  for name in fields:
    out[name] = np.zeros((len(histories), max_len), TOKEN_DTYPE[name])
  for row, tokens in enumerate(histories):
    recent = tokens[len(tokens) - max_len:] if len(tokens) > max_len else tokens
    if len(recent):
      out["inputs"][row, max_len - len(recent):] = recent["item"]
      for name in fields:
        out[name][row, max_len - len(recent):] = recent[name]
  return out


def history_items(histories: list[np.ndarray]) -> np.ndarray:
  """Every item of each history [B, S], in time order, zero-padded at the end; S is a power of
  two (at least 64), so few shapes ever compile: evaluation's `seen`, and serving's."""
  longest = max(map(len, histories), default=0)
  out = np.zeros((len(histories), max(64, 1 << (longest - 1).bit_length())), np.int32)
  for row, tokens in enumerate(histories):
    out[row, :len(tokens)] = tokens["item"]
  return out


def sequence_dataset(ds: PreparedDataset, split: str = "train", *, max_len: int = 200,
                     objective: str = "next", mask_prob: float = 0.2, max_targets: int = 1,
                     fields: tuple[str, ...] = (), target_fields: tuple[str, ...] = (),
                     with_seen: bool = False, targets_after: int | None = None,
                     empty_history_target: bool = False, shuffle_ties: bool = False,
                     options: PipelineOptions = PipelineOptions()) -> grain.IterDataset:
  """Per-user histories, left-padded to `max_len` (0 is padding).

  train, objective "next": a window of max_len + 1 tokens at a random offset of each user's
    training history (a new offset each epoch: sliding-window sampling of long histories);
    `inputs` = window[:-1], `targets` = window[1:] (a loss at every position).
  train, objective "masked": a window of max_len tokens; each position is replaced by the mask
    id (= ds.num_items) with probability mask_prob (at least one per user); `targets` holds the
    original item at masked positions, 0 elsewhere.
  valid/test: `inputs` = the most recent max_len tokens before the split, `targets` [B, max_targets]
    = the split's first max_targets items (max_targets 0: every one of them, as wide as the
    longest user's window), `weight` [B] is 0 for padding rows of the last batch; with `with_seen`,
    `seen` [B, S] holds every item of the user's history (not only the last max_len), for
    excluding them from the ranking; S is a power of two, so few shapes ever compile.
  train, with `with_seen`: `seen` [B, S] holds the distinct items the user
    watched before the window, sorted, zero-padded at the front (what a loss that leaves watched
    items out of the softmax needs beside the window itself); S is fixed for the dataset.
  Every batch has `user` [B]; each name in `fields` (token fields such as "event", "hour", "gap")
  adds `<field>` aligned with `inputs`; each name in `target_fields` adds `target_<field>` aligned
  with `targets` (the target token's field, e.g. its event type for weighting the loss).
  `empty_history_target` (train, "next" only): a window that starts at the user's first token
    also has it as the target of the padding position before it, predicted from no history, as
    a new user's first request is (the query of an empty history is otherwise never trained).
  `targets_after` (train, "next" only; Unix seconds): only tokens after that time are targets,
    the earlier ones stay as input (a warm-started run learning from new data only); only users
    with such a token train, and each window ends at or after the user's first of them.
  `shuffle_ties` (train): the tokens of a history that share a timestamp come in a new random
    order each time a window is drawn (see `_shuffle_ties`).
  """
  _check_split(split)
  if objective not in ("next", "masked"):
    raise UserError(f"unknown sequence objective {objective!r}: use 'next' or 'masked'.")
  lo, hi = _split_range(ds, split)
  train = split == "train"
  if max_targets < 0:
    raise UserError(f"max_targets must be >= 0 (0 = every item of the window), got {max_targets}.")
  # Shapes come from every user's lengths, so that every process builds the same ones.
  if max_targets == 0 and not train:  # every interaction in the window is a target
    max_targets = max(1, int((hi - lo).max(initial=1)))
  mask_id = ds.num_items
  window = max_len + 1 if objective == "next" else max_len
  batch_size = options.batch_size
  if with_seen and train:
    before_width = 1 << int(max(1, hi.max(initial=1) - window)).bit_length()
  part = _host_part(ds, options)
  has_targets = hi >= 2 if train else hi > lo
  largest = int(part.share_sizes(has_targets).max())
  users, lo, hi = part.records, lo[part.records], hi[part.records]  # this process's, by index
  eligible = np.flatnonzero(has_targets[users])
  records = _Records(part)
  first_new = None
  if targets_after is not None and train:
    if objective != "next":
      raise UserError("training on new data only (targets_after) needs the next-item objective; "
                      "masked-item training has no per-token targets to restrict.")
    first_new = _first_target_after(records, hi, targets_after)
    eligible = np.flatnonzero(first_new < hi)

  def build(indices: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    weight = None
    if not train:
      indices, weight = _pad_batch(indices, batch_size)
    n = len(indices)
    out = {}
    windows = []  # each row's input tokens
    targets = np.zeros((n, max_len) if train else (n, max_targets), np.int32)
    for name in target_fields:
      out[f"target_{name}"] = np.zeros(targets.shape, TOKEN_DTYPE[name])
    decoded = records(indices)
    if with_seen and not train:
      out["seen"] = history_items([tokens[:lo[record]] for record, tokens in
                                   zip(indices, decoded)])
    if with_seen and train:
      out["seen"] = np.zeros((n, before_width), np.int32)
    for row, (record, tokens) in enumerate(zip(indices, decoded)):
      if train:
        seq = tokens[:hi[record]]
        if shuffle_ties:
          seq = _shuffle_ties(seq, rng)
        starts_history = True
        if len(seq) > window:
          # With targets_after, the window's last target is at or after the first new token.
          low = 0 if first_new is None else max(0, int(first_new[record]) - window + 1)
          start = rng.integers(low, len(seq) - window + 1)
          starts_history = start == 0
          if with_seen:
            before = np.unique(seq[:start]["item"])
            out["seen"][row, before_width - len(before):] = before
          seq = seq[start:start + window]
        if objective == "next":
          inputs, target = seq[:-1], seq[1:]
        else:
          inputs, target = seq, seq
        if (empty_history_target and objective == "next" and starts_history
            and len(target) < max_len and first_new is None):
          target = seq  # the first token is also a target, read from the padding before it
        targets[row, max_len - len(target):] = target["item"]
        for name in target_fields:
          out[f"target_{name}"][row, max_len - len(target):] = target[name]
        if first_new is not None:  # earlier tokens are input only: no loss on them
          old = seq[1:]["timestamp"] <= targets_after
          targets[row, max_len - len(old):][old] = 0
      else:
        inputs = tokens[:lo[record]][-max_len:]
        held_out = tokens[lo[record]:hi[record]][:max_targets]
        targets[row, :len(held_out)] = held_out["item"]
        for name in target_fields:
          out[f"target_{name}"][row, :len(held_out)] = held_out[name]
      windows.append(inputs)
    out.update(window_batch(windows, max_len, fields))
    if train and objective == "masked":
      present = out["inputs"] != 0
      masked = present & (rng.random(present.shape) < mask_prob)
      # Every user contributes at least one masked position: force the last item when none drew.
      masked[~masked.any(axis=1), -1] = True
      targets = np.where(masked, out["inputs"], 0)
      out["inputs"] = np.where(masked, mask_id, out["inputs"])
    out["targets"] = targets
    out["user"] = (users[np.asarray(indices)] + FIRST_ID).astype(np.int32)
    if weight is not None:
      out["weight"] = weight
    return out

  data = _index_dataset(eligible, largest, options, train)
  data = data.random_map(build, seed=options.seed)
  return _finish(data, options)


def _shuffle_ties(tokens: np.ndarray, rng: np.random.Generator) -> np.ndarray:
  """`tokens` with each run of equal timestamps in a random order. A log stamped by the second
  does not know the order of what a user did within one (MovieLens-100K: 51% of a user's
  consecutive ratings share their second, in the file's arbitrary order), so training should
  not learn that order as if it were behaviour. The gap to the previous token stays with the
  position: it is a function of the timestamps in order (the first of a run carries the gap)."""
  stamps = tokens["timestamp"]
  run = np.concatenate([[0], np.cumsum(stamps[1:] != stamps[:-1])])
  shuffled = tokens[np.lexsort((rng.random(len(tokens)), run))]
  shuffled["gap"] = tokens["gap"]
  return shuffled


def _first_target_after(records: _Records, hi: np.ndarray, after: int,
                        chunk: int = 4096) -> np.ndarray:
  """Per user of this process (by index), the position of the first training token (at
  position >= 1, so it has a history) later than `after`; hi[user] when there is none."""
  first = np.array(hi, np.int64, copy=True)
  for begin in range(0, len(hi), chunk):
    users = np.arange(begin, min(begin + chunk, len(hi)))
    for record, tokens in zip(users, records(users)):
      later = np.flatnonzero(tokens["timestamp"][1:hi[record]] > after)
      if len(later):
        first[record] = later[0] + 1
  return first


# ----------------------------------------------------------------------------- token examples


@dataclasses.dataclass(frozen=True)
class _TokenIndex:
  """A flat index over this process's tokens of a split: example i is token
  lo[r] + (i - start[r]) of its user r (by index in the process's share; `users[r]` is the
  record). `first` [r]: the flat index of user r's first example over every process's users in
  id order, so an example keeps one global number however the users are spread (negatives drawn
  for evaluation are keyed by it). Token-sized arrays here are the process's own."""
  users: np.ndarray
  lo: np.ndarray
  start: np.ndarray
  first: np.ndarray
  largest: int

  def global_index(self, indices: np.ndarray, user: np.ndarray) -> np.ndarray:
    return self.first[user] + (indices - self.start[user])


def _token_index(ds: PreparedDataset, split: str, part: HostPart) -> _TokenIndex:
  lo, hi = _split_range(ds, split)
  count = (hi - lo).astype(np.int64)
  first = np.concatenate([[0], np.cumsum(count)])[:-1][part.records]
  largest = int(part.share_sizes(weights=count).max())
  users, lo, count = part.records, lo[part.records], count[part.records]
  return _TokenIndex(users, lo, np.concatenate([[0], np.cumsum(count)]), first, largest)


def _gather_tokens(records: _Records, index: _TokenIndex,
                   indices: np.ndarray) -> tuple[np.ndarray, np.ndarray, list]:
  """Rows for flat token indices, reading each record once; also returns each row's user (by
  index in the process's share) and the users' decoded tokens (for per-user features)."""
  record = np.searchsorted(index.start, indices, side="right") - 1
  position = index.lo[record] + (indices - index.start[record])
  unique, inverse = np.unique(record, return_inverse=True)
  decoded = records(unique)
  rows = np.concatenate([decoded[k][position[inverse == k]] for k in range(len(unique))])
  # np.unique grouped rows by record; put them back in batch order.
  order = np.concatenate([np.flatnonzero(inverse == k) for k in range(len(unique))])
  tokens = np.empty_like(rows)
  tokens[order] = rows
  return tokens, record, decoded


def _context(tokens: np.ndarray, record: np.ndarray) -> dict[str, np.ndarray]:
  return {"user": (record + FIRST_ID).astype(np.int32), "item": tokens["item"],
          "device": tokens["device"], "locale": tokens["locale"], "hour": tokens["hour"],
          "weekday": tokens["weekday"], "timestamp": tokens["timestamp"]}


def pair_dataset(ds: PreparedDataset, split: str = "train", *,
                 options: PipelineOptions = PipelineOptions()) -> grain.IterDataset:
  """(user, context, positive item) pairs for two-tower retrieval, one per token of the split.

  Each batch carries `item_log_q`: the log of the item's share of training tokens, the sampling
  probability that in-batch softmax corrects for (Yi et al. 2019), and the user's side features
  as `user_<name>`.
  """
  _check_split(split)
  part = _host_part(ds, options)
  index = _token_index(ds, split, part)
  records = _Records(part)
  counts = ds.item_counts.astype(np.float64)
  log_q = np.log(np.maximum(counts, 1) / max(counts.sum(), 1)).astype(np.float32)
  user_features = ds.user_features
  train = split == "train"
  batch_size = options.batch_size

  def build(indices: np.ndarray) -> dict[str, np.ndarray]:
    weight = None
    if not train:
      indices, weight = _pad_batch(indices, batch_size)
    tokens, user, _ = _gather_tokens(records, index, indices)
    out = _context(tokens, index.users[user])
    out["item_log_q"] = log_q[tokens["item"]]
    for name, table in user_features.items():
      out[f"user_{name}"] = table[out["user"]]
    if weight is not None:
      out["weight"] = weight
    return out

  examples = np.arange(index.start[-1])  # this process's tokens only
  return _finish(_index_dataset(examples, index.largest, options, train).map(build), options)


_ENGAGED = sum(1 << int(t) for t in (ev.EventType.CLICK, ev.EventType.PLAY, ev.EventType.PAUSE,
                                     ev.EventType.SEEK, ev.EventType.RATING,
                                     ev.EventType.INTERACTION, ev.EventType.LIKE,
                                     ev.EventType.SHARE, ev.EventType.FOLLOW))
LABELS = ("click", "watch", "like", "share", "follow", "skip", "report", "value")


def ranking_labels(tokens: np.ndarray) -> dict[str, np.ndarray]:
  """Task labels of a token. `click` is any engagement beyond the impression; `watch` the summed
  watch fraction (0 when nothing was played); a rating of 4 or more counts as a `like`."""
  actions = tokens["actions"]
  has = lambda t: ((actions >> int(t)) & 1).astype(np.float32)
  watched = np.maximum.reduce([has(ev.EventType.PLAY), has(ev.EventType.PAUSE),
                               has(ev.EventType.SEEK)])
  rated = has(ev.EventType.RATING)
  return {"click": ((actions & _ENGAGED) != 0).astype(np.float32),
          "watch": np.where(watched > 0, tokens["value"], 0).astype(np.float32),
          "like": np.maximum(has(ev.EventType.LIKE), rated * (tokens["value"] >= 4)),
          "share": has(ev.EventType.SHARE), "follow": has(ev.EventType.FOLLOW),
          "skip": has(ev.EventType.SKIP), "report": has(ev.EventType.REPORT),
          "value": tokens["value"].astype(np.float32)}


class RankingFeatures:
  """A ranking example's model inputs from its token (an impression: item, time, context) and its
  user's record index: `sparse` single-hot ids, `multi_hot` id lists, `dense` floats. Training
  reads logged tokens; serving makes one token per candidate, so both see the same features."""

  def __init__(self, ds: PreparedDataset):
    self.item_features, self.user_features = ds.item_features, ds.user_features
    self.first_seen = self.item_features["first_seen"]
    self.item_counts = np.log1p(ds.item_counts.astype(np.float32))
    self.user_activity = np.log1p(ds.splits.train_end.astype(np.float32))

  def __call__(self, tokens: np.ndarray, record: np.ndarray) -> dict:
    sparse = _context(tokens, record)
    del sparse["timestamp"]
    sparse["gap"] = tokens["gap"]
    multi_hot = {}
    for name, table in self.item_features.items():
      if table.dtype != np.int32:
        continue
      (multi_hot if table.ndim == 2 else sparse)[f"item_{name}"] = table[tokens["item"]]
    for name, table in self.user_features.items():
      if table.dtype == np.int32:
        sparse[f"user_{name}"] = table[sparse["user"]]
    hour = 2 * np.pi * (tokens["hour"] - 1) / 24
    day = 2 * np.pi * (tokens["weekday"] - 1) / 7
    age_days = (tokens["timestamp"] - self.first_seen[tokens["item"]]) / 86400
    dense = np.stack([self.item_counts[tokens["item"]], self.user_activity[record],
                      np.sin(hour), np.cos(hour), np.sin(day), np.cos(day),
                      tokens["gap"] / NUM_GAP_BUCKETS, np.log1p(np.maximum(age_days, 0))],
                     axis=1).astype(np.float32)
    return {"sparse": sparse, "multi_hot": multi_hot, "dense": dense}


def ranking_dataset(ds: PreparedDataset, split: str = "train", *,
                    negatives_per_positive: int = 0, negative_sampling: str = "uniform",
                    user_vectors=None,
                    options: PipelineOptions = PipelineOptions()) -> grain.IterDataset:
  """Ranking examples, one per token of the split: `sparse` single-hot ids (user, item, device,
  locale, hour, weekday, gap and categorical side features), `multi_hot` padded id lists
  (genres, title words), `dense` float features, and `labels` per task (see ranking_labels).
  Evaluation splits add `weight` [B], 0 for the padding rows of the last batch.

  `negatives_per_positive` N > 0 turns a log of positives only (MovieLens ratings) into ranking
  impressions: each token is followed by N items the user never interacted with in any split,
  drawn uniformly from the items already seen in the log at the token's time (or by training
  popularity with negative_sampling="popularity"), in the token's context with every label 0 and
  the item's own features (see ranking_negatives; a user who has rated every item of that time
  gets unrated items from the whole catalogue). The batch size still counts output rows, so each
  batch holds batch_size / (1 + N) tokens, each in rows [k * (1 + N), (k + 1) * (1 + N)), positive
  first. `group` [B] is then the user id, the unit that per-user ranking metrics (NDCG) sort
  within. Evaluation negatives depend only on options.seed and the example, so every evaluation
  ranks the same ones; training draws new ones each epoch.

  `user_vectors(timestamps, records) -> [B, D]` adds `user_embedding` [B, D]: a vector of each
  row's user at its time (train/user_features.py: a frozen sequence model's query over the
  tokens strictly before it).
  """
  _check_split(split)
  n_neg = negatives_per_positive
  if not isinstance(n_neg, (int, np.integer)) or n_neg < 0:
    raise UserError(f"negatives_per_positive must be a whole number >= 0, not {n_neg!r}.")
  n_neg = int(n_neg)
  if options.batch_size % (1 + n_neg):
    fit = max(options.batch_size // (1 + n_neg), 1) * (1 + n_neg)
    raise UserError(f"batch size {options.batch_size} does not split into groups of 1 positive + "
                    f"{n_neg} negatives: use a multiple of {1 + n_neg}, e.g. {fit}.")
  features = RankingFeatures(ds)
  sampler = negatives.NegativeSampler(ds.num_items, negative_sampling, ds.item_counts,
                                      ds.item_features["first_seen"])
  part = _host_part(ds, options)
  index = _token_index(ds, split, part)
  records = _Records(part)
  train = split == "train"
  batch_size = options.batch_size // (1 + n_neg)
  # Evaluation keys: the seed and split only, so a token's negatives never change between runs.
  eval_base = options.seed * len(SPLITS) + SPLITS.index(split)

  def build(indices: np.ndarray, rng: np.random.Generator | None = None) -> dict:
    weight = None
    if not train:
      indices, weight = _pad_batch(indices, batch_size)
    tokens, user, decoded = _gather_tokens(records, index, indices)
    record = index.users[user]
    if n_neg:
      base = int(rng.integers(2**63)) if train else eval_base
      # _gather_tokens decoded each record once, in np.unique order: the whole history, all splits.
      owner = np.unique(user, return_inverse=True)[1]
      keys = negatives.example_keys(base, index.global_index(indices, user))
      drawn = sampler.sample([d["item"] for d in decoded], owner, keys, n_neg,
                             tokens["timestamp"])
      tokens = negatives.with_negatives(tokens, drawn)
      record = np.repeat(record, 1 + n_neg)
      weight = None if weight is None else np.repeat(weight, 1 + n_neg)
    out = {**features(tokens, record), "labels": ranking_labels(tokens)}
    if user_vectors is not None:
      out["user_embedding"] = user_vectors(tokens["timestamp"], record)
    if n_neg:
      out["group"] = out["sparse"]["user"]
    if weight is not None:
      out["weight"] = weight
    return out

  examples = np.arange(index.start[-1])  # this process's tokens only
  data = _index_dataset(examples, index.largest,
                        dataclasses.replace(options, batch_size=batch_size), train)
  # Only training negatives need Grain's per-batch rng (fresh each epoch, restorable).
  data = data.random_map(build, seed=options.seed) if n_neg and train else data.map(build)
  return _finish(data, options)
