"""What every preparation writes beside the token shards, whichever engine computed it: the
statistics and manifest fields, and the per-user and per-item files (splits, item counts, side
features, vocabularies). prepare.py (in memory) and beam_finalize.py (Apache Beam) both call
these, so the two directories stay identical by construction."""

from __future__ import annotations

import dataclasses
import datetime
import os

import numpy as np

from jaxrec.data import storage
from jaxrec.data.events import EventType
from jaxrec.data.splits import Splits
from jaxrec.data.tokenize import TOKEN_DTYPE
from jaxrec.data.vocab import Vocabulary, ids_like


def iso(seconds: int) -> str:
  return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat()


def cold_catalogue_items(catalogue: np.ndarray, interacted: np.ndarray) -> np.ndarray | None:
  """The items side table's ids that no event names: new releases join the item vocabulary for
  cold start. `interacted`: the item ids of the log before --kcore filtering, so the items it
  dropped do not come back. None without a side table."""
  if not len(catalogue):
    return None
  return np.setdiff1d(ids_like(catalogue, interacted), interacted)


def manifest_fields(*, dataset: str, options, splits: Splits, user_vocab: Vocabulary,
                    item_vocab: Vocabulary, interactions: int, events_by_type: np.ndarray,
                    lengths: np.ndarray, distinct_pairs: int, time_range: tuple[int, int],
                    item_arrays: dict, user_arrays: dict) -> dict:
  """The manifest without its timing, notes, shards and files. events_by_type: counts indexed
  by EventType; distinct_pairs: distinct (user, item) pairs among the events."""
  stats = {
      "users": user_vocab.num_known,
      "items": item_vocab.num_known,
      "interactions": int(interactions),
      "tokens": int(lengths.sum()),
      "items_without_interactions": int((item_vocab.counts == 0).sum()),
      "events_by_type": {t.name.lower(): int(events_by_type[t]) for t in EventType
                         if events_by_type[t]},
      "tokens_per_user": {"mean": float(lengths.mean()), "median": float(np.median(lengths)),
                          "max": int(lengths.max())},
      "density": float(int(distinct_pairs)
                       / (user_vocab.num_known * max(item_vocab.num_known, 1))),
      "time_range": [iso(int(time_range[0])), iso(int(time_range[1]))],
      "split_tokens": splits.counts(),
      "item_features": sorted(item_arrays),
      "user_features": sorted(user_arrays),
  }
  return {
      "format_version": storage.FORMAT_VERSION,
      "dataset": dataset,
      "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
      "options": dataclasses.asdict(options),
      "split": splits.description,
      "token_fields": [[name, str(TOKEN_DTYPE[name])] for name in TOKEN_DTYPE.names],
      "stats": stats,
  }


def write_tables(folder: str, *, splits: Splits, train_counts: np.ndarray,
                 item_arrays: dict, user_arrays: dict, vocabs: dict[str, Vocabulary],
                 item_feature_vocabs: dict, user_feature_vocabs: dict) -> None:
  """splits.npz, item_counts.npz, item_features.npz, user_features.npz and vocab/NAME.npz.
  vocabs: "user", "item", "device", "locale"; the side tables' vocabularies are added as
  item_NAME / user_NAME."""
  storage.save_arrays(os.path.join(folder, "splits.npz"), {
      "train_end": splits.train_end, "valid_end": splits.valid_end, "length": splits.length})
  storage.save_arrays(os.path.join(folder, "item_counts.npz"),
                      {"train": train_counts, "all": vocabs["item"].count_table()})
  storage.save_arrays(os.path.join(folder, "item_features.npz"), item_arrays)
  storage.save_arrays(os.path.join(folder, "user_features.npz"), user_arrays)
  os.makedirs(os.path.join(folder, "vocab"), exist_ok=True)
  every = {**vocabs, **{f"item_{k}": v for k, v in item_feature_vocabs.items()},
           **{f"user_{k}": v for k, v in user_feature_vocabs.items()}}
  for name, vocab in every.items():
    vocab.save(os.path.join(folder, "vocab", f"{name}.npz"))
