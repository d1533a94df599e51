"""The Beam preparation's last two steps: the small per-user and per-item tables, then the manifest.

Everything here is per item or per user (vocabularies, split boundaries, counts, side features),
never per event, and runs once, on one worker, writing the same files with the same contents as
prepare.py. The manifest is written by `write_manifest`, which the pipeline runs only after
every shard and every other file is written: a directory with a manifest is complete.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np

from jaxrec.data import features, prepared_files, storage
from jaxrec.data.beam_sources import Source, side_table
from jaxrec.data.splits import Splits
from jaxrec.data.vocab import FIRST_ID, Vocabulary
from jaxrec.errors import UserError

MAX_PART_NOTES = 20


def _check_events(source: Source, options, read: int, selected: int, kept: int) -> None:
  """The local path's refusals, in its order: no events read, none of the --events types, none
  left by --kcore."""
  if kept:
    return
  if not read:
    raise UserError(f"dataset {source.name!r} contains no events: nothing to prepare. Check "
                    "the input file and the column mapping.")
  if options.events and not selected:
    raise UserError(f"dataset {source.name!r} has no events of types {list(options.events)}: "
                    "check --events against `jaxrec data stats` of the unfiltered data.")
  raise UserError(f"--kcore {options.kcore} removed every event of {source.name!r}. Use a "
                  "smaller k.")


def _part_notes(part_notes: list) -> list[str]:
  """What reading each part assumed or dropped, in part order; a log of thousands of parts
  says the first MAX_PART_NOTES and counts the rest."""
  notes = [n for _, part in sorted(part_notes) for n in part]
  if len(notes) <= MAX_PART_NOTES:
    return notes
  return notes[:MAX_PART_NOTES] + [
      f"... and {len(notes) - MAX_PART_NOTES} more such notes from other parts (each part is "
      "read on its own: pass --time-unit to state the timestamps' unit for all of them)."]


def _ids(values: list, dtypes: list[str]) -> np.ndarray:
  if dtypes and np.dtype(dtypes[0]).kind in "iu":
    return np.array(sorted(values), np.int64)
  return np.array(sorted(values), dtype=str) if values else np.zeros(0, str)


def finalize(_, *, folder: str, source: Source, options, summary: dict,
             unfiltered: dict, vocabs: dict[str, Vocabulary], users: list, train_counts: list,
             first_seen: list, seen: list, part_notes: list, cutoffs,
             kcore_selected: dict | None = None, kcore_items: list | None = None,
             kcore_converged: bool | None = None) -> dict:
  """Writes splits.npz, item_counts.npz, the side features and vocab/; returns the manifest
  without its shards and files. kcore_*: with --kcore, the summary before it, the items
  before it, and whether its rounds converged (beam_steps.kcore_converged raised if not)."""
  _check_events(source, options, unfiltered["events"],
                (kcore_selected or summary)["events"], summary["events"])
  user_vocab = vocabs["user"]
  notes = list(source.notes) + _part_notes(part_notes)
  seen_ids = {f: _ids([v for field, v in seen if field == f], unfiltered["dtypes"][f])
              for f in ("user", "item")}
  items = side_table(source.items, seen_ids["item"], notes)
  user_table = side_table(source.users, seen_ids["user"], notes)
  core = vocabs["item"]
  interacted = core.raw_ids if kcore_items is None else np.array(kcore_items)
  cold = prepared_files.cold_catalogue_items(np.asarray(items.ids), interacted)
  item_vocab = Vocabulary.from_counts(core.raw_ids, core.counts, extra_ids=cold)

  table = np.array(sorted(users), np.int64).reshape(-1, 5)
  if not np.array_equal(table[:, 0], np.arange(user_vocab.num_known) + FIRST_ID):
    raise RuntimeError(_record_mismatch(table[:, 0], user_vocab))
  lengths, train_end, valid_end, distinct = (table[:, k] for k in range(1, 5))
  splits = Splits(train_end=train_end, valid_end=valid_end, length=lengths,
                  description=cutoffs[2])
  counts = np.zeros(len(item_vocab), np.int64)
  for item, count in train_counts:
    counts[item] = count
  first = np.full(len(item_vocab), -1, np.int64)
  for item, seconds in first_seen:
    first[item] = seconds
  # Element loss in the runner must fail the run, not write wrong counts: every training token
  # is counted once, and every item with an event has a first appearance.
  if counts.sum() != train_end.sum() or (first >= 0).sum() != (core.counts > 0).sum():
    raise RuntimeError(f"the per-item tables are incomplete: {counts.sum()} training tokens "
                       f"counted of {train_end.sum()}, first appearances for "
                       f"{(first >= 0).sum()} of {(core.counts > 0).sum()} items.")

  item_arrays, item_feature_vocabs = features.encode_side_table(items, item_vocab)
  user_arrays, user_feature_vocabs = features.encode_side_table(user_table, user_vocab)
  item_arrays["first_seen"] = first
  manifest = prepared_files.manifest_fields(
      dataset=source.name, options=options, splits=splits, user_vocab=user_vocab,
      item_vocab=item_vocab, interactions=summary["events"], events_by_type=summary["by_type"],
      lengths=lengths, distinct_pairs=distinct.sum(), time_range=summary["time"],
      item_arrays=item_arrays, user_arrays=user_arrays)
  if notes:
    manifest["notes"] = notes
  if source.source_config is not None:
    manifest["source_config"] = source.source_config

  prepared_files.write_tables(
      folder, splits=splits, train_counts=counts, item_arrays=item_arrays,
      user_arrays=user_arrays, item_feature_vocabs=item_feature_vocabs,
      user_feature_vocabs=user_feature_vocabs,
      vocabs={"user": user_vocab, "item": item_vocab, "device": vocabs["device"],
              "locale": vocabs["locale"]})
  return manifest


def write_manifest(manifest: dict, *, folder: str, shards: list, runner: str,
                   started: float) -> str:
  """Last: lists the shards and every file, marking the directory complete."""
  manifest = dict(manifest)
  manifest["seconds"] = round(time.time() - started, 2)
  manifest["runner"] = runner
  manifest["shards"] = sorted(shards, key=lambda s: s["file"])
  expected = {s["file"] for s in manifest["shards"]}
  written = {name for name in os.listdir(folder) if name.startswith("tokens-")}
  if expected != written:
    raise RuntimeError(f"token shards written {sorted(written)} but listed {sorted(expected)}")
  in_shards = [sum(s[k] for s in manifest["shards"]) for k in ("users", "tokens")]
  stats = manifest["stats"]
  if in_shards != [stats["users"], stats["tokens"]]:
    raise RuntimeError(f"the token shards hold {in_shards[0]} users and {in_shards[1]} tokens, "
                       f"the tables {stats['users']} and {stats['tokens']}.")
  manifest["files"] = storage.file_sizes(folder)
  with open(os.path.join(folder, storage.MANIFEST), "w") as f:
    json.dump(manifest, f, indent=2)
  return os.path.join(folder, storage.MANIFEST)


def _record_mismatch(ids: np.ndarray, user_vocab: Vocabulary) -> str:
  """What differs between the users with a token record and the user vocabulary (a pipeline
  runner that lost or repeated elements)."""
  known = np.arange(user_vocab.num_known) + FIRST_ID
  distinct, counts = np.unique(ids, return_counts=True)
  missing = np.setdiff1d(known, distinct)
  repeated = distinct[counts > 1]
  return (f"every known user must have exactly one token record: {len(ids)} records for "
          f"{len(known)} users; {len(missing)} users have none (ids {missing[:5].tolist()}, raw "
          f"{user_vocab.raw_ids[missing[:5] - FIRST_ID].tolist()}), {len(repeated)} have several "
          f"(ids {repeated[:5].tolist()}), {int((~np.isin(distinct, known)).sum())} are unknown.")
