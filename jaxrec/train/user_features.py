"""The foundation model's user embedding as a feature of the DLRM ranker (issue 7 §5).

`model.user_embedding_from=WORKDIR` (a foundation or sequential run on the same prepared dataset)
gives every ranking example a dense vector: that model's query vector over the user's history.

Leak-free rule: the feature of an example at time t reads the user's tokens with timestamp < t,
strictly, the most recent `max_len` of them, as the model's own evaluation window (its
`history_batch`) lays them out, and takes the state after the last one (`query_vectors`). The
example's own token, any other event in the same second, and everything later are never read,
so no label reaches its feature. Serving computes the same function over the request's history
before its `now`.

The encoder is frozen. Training and evaluation read a table computed once per process and
encoder checkpoint (nothing is written to disk): one vector per distinct (user, number of earlier tokens) that the dataset's
examples need, looked up on the host by the Grain pipeline. Its weights were trained on the same
dataset's training split, so on training examples the feature has seen the label through the
encoder's weights (it was fitted to predict those items) while on validation and test examples it
has not: the ranker may lean on it more than held-out data justifies.
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections
import numpy as np
from flax import nnx

from jaxrec.data.storage import PreparedDataset
from jaxrec.data.vocab import FIRST_ID
from jaxrec.errors import UserError
from jaxrec.train.restore import restore_model

SOURCE_TASKS = ("foundation", "sequential")
BATCH = 256  # windows per encoder call: one compiled shape


def source_config(path: str):
  """The encoder run's config, checked: it exists and is a foundation or sequential run."""
  config_path = os.path.join(path, "config.json")
  if not os.path.isdir(path):
    raise UserError(f"model.user_embedding_from={path!r} is not a directory: pass the workdir of "
                    "a foundation (or sequential) run trained on this dataset, or '' to train "
                    "without the feature.")
  try:
    with open(config_path) as f:
      config = ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as e:
    raise UserError(f"model.user_embedding_from={path!r} has no readable config.json ({e}): pass "
                    "the workdir of a finished `jaxrec train` run.") from e
  if config.get("task") not in SOURCE_TASKS:
    raise UserError(f"model.user_embedding_from={path!r} holds a {config.get('task')!r} run: the "
                    f"user embedding comes from a {' or '.join(SOURCE_TASKS)} run, e.g. "
                    "`jaxrec train --config configs/movielens_foundation.py`.")
  return config


def is_export(path: str) -> bool:
  """An exported model directory (params + config.json, no checkpoints): a bundle's encoder."""
  return os.path.isdir(os.path.join(path, "params")) and not os.path.isdir(
      os.path.join(path, "checkpoints"))


def check_same_data(config, path: str, data: PreparedDataset) -> None:
  """The encoder run read the same users and items (equal vocabularies) as the ranker, and
  trained on the same training split (so nothing the ranker holds out)."""
  theirs_dir = config.data.dir
  if not os.path.exists(os.path.join(theirs_dir, "manifest.json")):
    raise UserError(f"model.user_embedding_from={path!r} was trained on {theirs_dir}, which is "
                    "not there: prepare it again or point the ranker at a run whose data exists.")
  theirs = PreparedDataset(theirs_dir)
  for name in ("user", "item"):
    if theirs.vocabs[name] != data.vocabs[name]:
      raise UserError(f"model.user_embedding_from={path!r} was trained on {theirs_dir}, whose "
                      f"{name} vocabulary differs from this ranker's dataset ({data.path}): "
                      "train the encoder on the same prepared dataset.")
  if not np.array_equal(theirs.splits.train_end, data.splits.train_end):
    raise UserError(f"model.user_embedding_from={path!r} was trained on another split of these "
                    "users' histories: its weights could hold this ranker's held-out events. "
                    "Train the encoder on the same prepared dataset (same --split).")


class UserEncoder:
  """A frozen sequence model's query vector over token histories."""

  def __init__(self, task, graphdef, state, batch: int | None = BATCH):
    """batch: windows per call, the last call padded to it (one compiled shape); None: the
    histories as given (serving passes its padded request batch)."""
    self.task, self.batch = task, batch
    self.dim = int(task.config.model.dim)
    query = jax.jit(lambda state, batch: task.query_vectors(nnx.merge(graphdef, state), batch))
    self._query = lambda batch: query(state, batch)

  @classmethod
  def from_workdir(cls, path: str) -> "UserEncoder":
    model = restore_model(path)
    return cls(model.task, model.graphdef, model.state)

  def __call__(self, histories: list[np.ndarray], users, times) -> np.ndarray:
    """[N, D]: the query vector after each history's last token (oldest first, TOKEN_DTYPE)
    for a request at times[i] (Unix seconds); users [N] their ids (OOV for an unknown user)."""
    users, times = np.asarray(users, np.int32), np.asarray(times, np.int64)
    size = self.batch or max(len(histories), 1)
    out = []
    for start in range(0, len(histories), size):
      chunk = histories[start:start + size]
      batch = self.task.history_batch(chunk, users[start:start + size], size,
                                      times[start:start + size])
      out.append(np.asarray(self._query(batch))[:len(chunk)])
    return np.concatenate(out) if out else np.zeros((0, self.dim), np.float32)

  def before(self, histories: list[np.ndarray], users, times) -> np.ndarray:
    """[N, D]: each history's vector over its tokens strictly before times[i] (serving)."""
    return self([h[h["timestamp"] < t] for h, t in zip(histories, times)], users, times)


class HistoryVectors:
  """Every user's feature at every time a dataset's examples occur, computed once: row
  (record, earlier) is the encoder over the record's first `earlier` tokens."""

  def __init__(self, data: PreparedDataset, encoder: UserEncoder):
    tokens = data.user_tokens(np.arange(data.num_users) + FIRST_ID)
    self.times = [t["timestamp"] for t in tokens]
    # An example at time t reads the tokens before t: how many there are at each token's time.
    earlier = [np.unique(np.searchsorted(ts, ts, side="left")) for ts in self.times]
    self.offsets = np.concatenate([[0], np.cumsum([len(ts) + 1 for ts in self.times])])
    self.row = np.full(self.offsets[-1], -1, np.int64)
    histories, users, times = [], [], []
    for record, counts in enumerate(earlier):
      self.row[self.offsets[record] + counts] = np.arange(len(counts)) + len(histories)
      histories.extend(tokens[record][:n] for n in counts)
      users.extend([record + FIRST_ID] * len(counts))
      times.extend(self.times[record][counts])  # the examples' time: their request's
    self.vectors = encoder(histories, users, times).astype(np.float32)

  @property
  def dim(self) -> int:
    return self.vectors.shape[1]

  def __call__(self, timestamps: np.ndarray, records: np.ndarray) -> np.ndarray:
    """[N, D] for examples at `timestamps` of users `records` (record = user id - 2)."""
    earlier = np.array([np.searchsorted(self.times[r], t, side="left")
                        for r, t in zip(records, timestamps)], np.int64)
    rows = self.row[self.offsets[records] + earlier]
    if (rows < 0).any():
      raise ValueError("an example's time is not one of its user's token times: the table holds "
                       "only the times of the dataset's tokens")
    return self.vectors[rows]


_TABLES: dict[tuple, HistoryVectors] = {}


def history_vectors(encoder_dir: str, data: PreparedDataset) -> HistoryVectors:
  """The feature table of `data` from the encoder run in `encoder_dir`, computed once per
  process (several rankers, seeds or evaluations over the same encoder and data share it)."""
  checkpoints = os.path.join(encoder_dir, "checkpoints")
  key = (os.path.realpath(encoder_dir), os.path.realpath(data.path),
         os.path.getmtime(checkpoints) if os.path.exists(checkpoints) else 0.0)
  if key not in _TABLES:
    _TABLES[key] = HistoryVectors(data, UserEncoder.from_workdir(encoder_dir))
  return _TABLES[key]
