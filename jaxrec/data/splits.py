"""Time-ordered splits, expressed as per-user boundaries into the time-sorted token sequence.

Each user's tokens are stored once; a split is `train_end[u] <= valid_end[u] <= length[u]`:
train on tokens[:train_end], validate on tokens[train_end:valid_end] with the tokens before as
history, test on tokens[valid_end:] likewise. No token is ever evaluated with a later one in view.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.errors import UserError


@dataclasses.dataclass
class Splits:
  train_end: np.ndarray
  valid_end: np.ndarray
  length: np.ndarray
  description: dict

  def counts(self) -> dict[str, int]:
    return {"train": int(self.train_end.sum()),
            "valid": int((self.valid_end - self.train_end).sum()),
            "test": int((self.length - self.valid_end).sum())}


def leave_one_out(length: np.ndarray) -> Splits:
  """Validation is each user's second-to-last token, test the last. Users with fewer than three
  tokens only train: holding out their one or two tokens would leave no history."""
  length = np.asarray(length, np.int64)
  enough = length >= 3
  return Splits(train_end=np.where(enough, length - 2, length),
                valid_end=np.where(enough, length - 1, length), length=length,
                description={"kind": "leave-one-out"})


def temporal(timestamp: np.ndarray, offsets: np.ndarray, t1: float, t2: float) -> Splits:
  """Global temporal split: train before t1, validation in [t1, t2), test from t2.

  t1 and t2 are Unix seconds, or quantiles of the token timestamps when both lie in (0, 1).
  """
  if 0 < t1 < 1 and 0 < t2 <= 1:
    t1, t2 = (float(q) for q in np.quantile(timestamp, [t1, t2]))
  if not t1 < t2:
    raise UserError(f"temporal split needs t1 < t2, got t1={t1}, t2={t2}. Give two quantiles "
                    "(e.g. --split-times 0.8,0.9) or two increasing Unix timestamps.")
  length = np.diff(offsets)
  user = np.repeat(np.arange(len(length)), length)
  # Tokens are time-sorted within a user, so "how many before t" is each boundary.
  train_end = np.bincount(user[timestamp < t1], minlength=len(length))
  valid_end = np.bincount(user[timestamp < t2], minlength=len(length))
  return Splits(train_end=train_end, valid_end=valid_end, length=length,
                description={"kind": "temporal", "t1": int(t1), "t2": int(t2)})
