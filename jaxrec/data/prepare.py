"""Raw events -> a prepared dataset directory: vocabularies, tokens, splits, side features."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import shlex
import time

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from jaxrec.data import features, prepared_files, shards, splits as splits_lib, storage
from jaxrec.data.events import EventType, RawDataset
from jaxrec.data.filtering import kcore_mask
from jaxrec.data.tokenize import MERGE_GAP, tokenize
from jaxrec.data.vocab import FIRST_ID, Vocabulary
from jaxrec.errors import UserError

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class PrepareOptions:
  split: str = "loo"  # "loo" (leave-one-out by time) or "temporal" (global cut-offs)
  split_times: tuple[float, float] = (0.8, 0.9)  # temporal: quantiles in (0, 1) or Unix seconds
  kcore: int = 0  # drop users and items with fewer interactions; 0 keeps everything
  merge_gap: int | None = MERGE_GAP  # seconds; None turns event merging off
  # Event types to keep, e.g. ("click", "play", "like"): a model of what users engage with
  # rather than of what they were shown. Empty keeps every event.
  events: tuple[str, ...] = ()
  # Token files, by a hash of the user; each host of a multi-host job reads shards i with
  # i % processes == its index. None: one per ~250k events, a power of two (shards.py).
  shards: int | None = None

  def validate(self) -> None:
    known = [e.name.lower() for e in EventType]
    unknown = [e for e in self.events if e not in known]
    if unknown:
      raise UserError(f"unknown event type(s) {unknown} in --events: use names from "
                      f"{', '.join(known)}.")
    if self.split not in ("loo", "temporal"):
      raise UserError(f"unknown split {self.split!r}: use 'loo' (leave-one-out by time) or "
                      "'temporal' (global time cut-offs).")
    if self.kcore < 0:
      raise UserError(f"--kcore must be >= 0, got {self.kcore}.")
    if self.merge_gap is not None and self.merge_gap < 0:
      raise UserError(f"--merge-gap must be >= 0 seconds, got {self.merge_gap}.")
    if self.shards is not None and (not isinstance(self.shards, int) or self.shards < 1):
      raise UserError(f"--shards must be a whole number >= 1, got {self.shards!r}.")


def _dense_ids(values: np.ndarray) -> np.ndarray:
  return pc.dictionary_encode(pa.array(values)).indices.to_numpy()


def _context_vocab(column: np.ndarray | None, n: int) -> tuple[Vocabulary, np.ndarray]:
  if column is None:
    return Vocabulary.build(np.zeros(0, str)), np.zeros(n, np.int32)
  column = np.asarray(column).astype(str)
  vocab = Vocabulary.build(column[column != ""])
  ids = vocab.lookup(column)
  return vocab, np.where(column == "", 0, ids).astype(np.int32)


def prepare(raw: RawDataset, out: str, options: PrepareOptions = PrepareOptions(),
            overwrite: bool = False) -> storage.PreparedDataset:
  options.validate()
  started = time.time()
  events = raw.events
  if len(events) == 0:
    raise UserError(f"dataset {raw.name!r} contains no events: nothing to prepare. Check the "
                    "input file and the column mapping.")
  if options.events:
    keep = np.array([EventType[name.upper()] for name in options.events])
    events = events.take(np.isin(np.asarray(events.event_type), keep))
    if len(events) == 0:
      raise UserError(f"dataset {raw.name!r} has no events of types {list(options.events)}: "
                      "check --events against `jaxrec data stats` of the unfiltered data.")
  raw_items = np.unique(events.item)
  if options.kcore > 0:
    events = events.take(kcore_mask(_dense_ids(events.user), _dense_ids(events.item), options.kcore))
    if len(events) == 0:
      raise UserError(f"--kcore {options.kcore} removed every event of {raw.name!r}. Use a "
                      "smaller k.")

  cold_items = prepared_files.cold_catalogue_items(np.asarray(raw.items.ids), raw_items)
  item_vocab = Vocabulary.build(events.item, extra_ids=cold_items)
  user_vocab = Vocabulary.build(events.user)
  device_vocab, device = _context_vocab(events.device, len(events))
  locale_vocab, locale = _context_vocab(events.locale, len(events))
  user = user_vocab.lookup(events.user)
  item = item_vocab.lookup(events.item)
  timestamp = np.asarray(events.timestamp, np.int64)
  order = np.lexsort((timestamp, user))  # stable: same-second events keep the log's order
  user, item, timestamp = user[order], item[order], timestamp[order]
  tokens, token_user = tokenize(user, item, timestamp, np.asarray(events.event_type)[order],
                    np.asarray(events.value)[order], device[order], locale[order],
                    options.merge_gap)
  del order, device, locale

  lengths = np.bincount(token_user, minlength=len(user_vocab))[FIRST_ID:]
  offsets = np.concatenate([[0], np.cumsum(lengths)])
  if options.split == "loo":
    splits = splits_lib.leave_one_out(lengths)
  else:
    splits = splits_lib.temporal(tokens["timestamp"], offsets, *options.split_times)

  position = np.arange(len(tokens)) - np.repeat(offsets[:-1], lengths)
  in_train = position < np.repeat(splits.train_end, lengths)
  train_counts = np.bincount(tokens["item"][in_train], minlength=len(item_vocab))
  first_seen = np.full(len(item_vocab), -1, np.int64)
  order = np.argsort(tokens["timestamp"], kind="stable")[::-1]  # last write wins: earliest
  first_seen[tokens["item"][order]] = tokens["timestamp"][order]

  item_arrays, item_feature_vocabs = features.encode_side_table(raw.items, item_vocab)
  user_arrays, user_feature_vocabs = features.encode_side_table(raw.users, user_vocab)
  item_arrays["first_seen"] = first_seen

  event_counts = np.bincount(np.asarray(events.event_type, np.int64), minlength=len(EventType) + 1)
  manifest = prepared_files.manifest_fields(
      dataset=raw.name, options=options, splits=splits, user_vocab=user_vocab,
      item_vocab=item_vocab, interactions=len(events), events_by_type=event_counts,
      lengths=lengths, time_range=(timestamp.min(), timestamp.max()),
      distinct_pairs=len(np.unique(user.astype(np.int64) * len(item_vocab) + item)),
      item_arrays=item_arrays, user_arrays=user_arrays)
  manifest["seconds"] = round(time.time() - started, 2)
  for note in raw.notes:  # what reading assumed or dropped: said now, and kept in the manifest
    logger.warning("%s", note)
  if raw.notes:
    manifest["notes"] = list(raw.notes)
  if raw.source_config is not None:
    manifest["source_config"] = raw.source_config  # jaxrec/eval/simulation/world.py rebuilds the world
  with storage.atomic_directory(out, overwrite) as tmp:
    num_shards = options.shards or shards.default_num_shards(len(events))
    manifest["shards"] = shards.write_shards(tmp, tokens, offsets, num_shards)
    prepared_files.write_tables(
        tmp, splits=splits, train_counts=train_counts, item_arrays=item_arrays,
        user_arrays=user_arrays, item_feature_vocabs=item_feature_vocabs,
        user_feature_vocabs=user_feature_vocabs,
        vocabs={"user": user_vocab, "item": item_vocab, "device": device_vocab,
                "locale": locale_vocab})
    manifest["files"] = storage.file_sizes(tmp)  # the reader checks they are all still there
    with open(os.path.join(tmp, storage.MANIFEST), "w") as f:  # written last: marks completion
      json.dump(manifest, f, indent=2)
  return storage.PreparedDataset(out)


def open_or_prepare(cfg) -> storage.PreparedDataset:
  """The prepared dataset at cfg.dir, preparing it from cfg.dataset first when it is not there.

  cfg: a config's `data` section: dataset, dir, data_dir, split, split_times, kcore, merge_gap,
  for your own logs path, columns ("user=uid,item=movie,timestamp=ts"), time_unit ("ms") and
  block_size_mb, and for synthetic data `synthetic` (SyntheticConfig fields, e.g. num_items).
  `runner` "local" prepares in memory; a Beam runner (direct, dataflow, flink, spark) runs the
  same preparation as `jaxrec data prepare --runner` does, with `beam_options`, Beam's pipeline
  options separated by spaces ("direct_num_workers=2 direct_running_mode=multi_processing").

  In a multi-process run only process 0 prepares; the others wait for it at a barrier and then
  read. Every host preparing the same shared directory raced: one found it "already exists",
  the others waited in a collective until Gloo timed out."""
  import jax
  if jax.process_count() == 1:
    return _open_or_prepare(cfg)
  from jax.experimental import multihost_utils
  failure = None
  if jax.process_index() == 0:
    try:
      _open_or_prepare(cfg)
    except Exception as e:  # reach the barrier anyway, so the others stop waiting and say why
      failure = e
  # One name whatever the path: hosts may spell (or mount) the same directory differently.
  multihost_utils.sync_global_devices("jaxrec prepared data")
  if failure is not None:
    raise failure
  if not os.path.exists(os.path.join(cfg.dir, storage.MANIFEST)):
    raise UserError(
        f"process {jax.process_index()}: after process 0 prepared data.dir, {cfg.dir} holds no "
        "prepared dataset on this host: process 0 failed (its log says why), or data.dir is not "
        "on storage every host shares. Put it on shared storage, or prepare it on every host "
        "first with `jaxrec data prepare --out DIR`.")
  return storage.PreparedDataset(cfg.dir)


def _open_or_prepare(cfg) -> storage.PreparedDataset:
  if os.path.exists(os.path.join(cfg.dir, storage.MANIFEST)):
    return storage.PreparedDataset(cfg.dir)
  options = PrepareOptions(split=cfg.split, split_times=tuple(cfg.get("split_times", (0.8, 0.9))),
                           kcore=cfg.get("kcore", 0), merge_gap=cfg.get("merge_gap", MERGE_GAP),
                           events=tuple(e for e in cfg.get("events", "").split(",") if e),
                           shards=cfg.get("shards") or None)
  runner = cfg.get("runner") or "local"
  beam_options = shlex.split(cfg.get("beam_options") or "")
  if runner == "local" and beam_options:
    raise UserError(f"data.beam_options={cfg.beam_options!r} applies to a Beam runner, but "
                    "data.runner is 'local': set data.runner=direct (or dataflow, flink, spark), "
                    "or leave data.beam_options empty.")
  columns = None
  if cfg.get("columns"):
    from jaxrec.data.tabular import parse_column_mapping
    columns = parse_column_mapping(cfg.columns)
  synthetic = cfg.get("synthetic")
  return prepare_source(cfg.dataset, cfg.dir, options, runner=runner, beam_options=beam_options,
                        data_dir=cfg.get("data_dir") or None, path=cfg.get("path") or None,
                        columns=columns, time_unit=cfg.get("time_unit") or None,
                        block_size_mb=cfg.get("block_size_mb") or None,
                        synthetic=dict(synthetic) if synthetic else None)


def prepare_source(dataset: str, out: str, options: PrepareOptions, *, runner: str = "local",
                   overwrite: bool = False, beam_options=(), beam_args=(),
                   **source) -> storage.PreparedDataset:
  """Prepares the named source (`source`: the keyword arguments of sources.load_raw) into
  `out`: in memory with runner "local", else as the same Beam pipeline on that runner."""
  if runner == "local":
    from jaxrec.data.sources import load_raw
    return prepare(load_raw(dataset, **source), out, options, overwrite=overwrite)
  from jaxrec.data import beam_prepare, beam_sources
  beam_prepare.check_supported(options, runner)  # before reading anything
  return beam_prepare.prepare_beam(beam_sources.plan(dataset, **source), out, options,
                                   overwrite=overwrite, runner=runner,
                                   beam_options=beam_options, beam_args=beam_args)
