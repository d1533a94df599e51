"""`jaxrec data prepare --runner direct|dataflow|flink|spark`: preparation as an Apache Beam pipeline.

The same preparation as prepare.py, for logs that outgrow one machine, producing a directory
that storage.PreparedDataset reads exactly like the local one (the tests compare them):

    parts ──► read (one part per worker) ──► --events ──┬─► id counts ─► vocabularies (combiners)
                                                        └─► events by user ◄── vocabularies
    by user ──► sort (timestamp, part, row) ──► tokenize ──► split ──┬─► shard k ─► one writer each
                                                                     └─► per-user / per-item sums
    finalize (vocab/, splits, counts, side features) ──► manifest.json, last

Vocabulary ids equal the local path's because the counts are ordered by the same rule
(Vocabulary.from_counts); a user's events are sorted by timestamp, then by the row's place in
the log, as the local path's stable sort keeps them; `tokenize` is the same function. --kcore runs
KCORE_ROUNDS filtering rounds and stops with a message if they did not reach the fixed point.

Beam is imported only here, and only when a Beam runner is asked for (the `beam` extra).
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import re
import threading
import time

from jaxrec.data import beam_finalize, beam_steps as steps, shards as shards_lib, storage
from jaxrec.data.beam_sources import Source, read_part
from jaxrec.errors import UserError

logger = logging.getLogger(__name__)

RUNNERS = {"direct": "DirectRunner", "dataflow": "DataflowRunner", "flink": "FlinkRunner",
           "spark": "SparkRunner"}
KCORE_ROUNDS = 12  # k-core filtering rounds in the pipeline (the local path stops at 100)


def import_beam():
  # Beam's GCP module warns at import that its optional clients are missing; they are, by design.
  quiet = _Drop(lambda record: "apitools not found" in str(record.msg))
  logging.getLogger().addFilter(quiet)
  try:
    import apache_beam
  except ImportError as e:
    raise UserError(f"--runner with a Beam runner needs Apache Beam ({e}): pip install "
                    "'jaxrec[beam]' (or use --runner local, the in-memory path).") from e
  finally:
    logging.getLogger().removeFilter(quiet)
  return apache_beam


@contextlib.contextmanager
def direct_runner_without_lost_data():
  """The DirectRunner sends its workers every element of their inputs, for the run.

  In Beam 2.77 the runner copies a worker's share of a stage's input into an output stream that
  a second thread flushes every second (DATA_BUFFER_TIME_LIMIT_MS); that flush takes the buffer,
  blocks while the 100 MB send queue drains, then clears the buffer -- dropping whatever the
  runner wrote meanwhile, with no error. At 50M events, 400,000 of 1,000,000 users' events
  vanished between two stages this way (the finalize check refused the run); a pipeline of 200
  10-MB elements loses a few in most runs. Turning the timer off alone sends each share as one
  message, four copies of it in memory at once (21.6 GiB at 50M). So here each piece the runner
  holds (whole elements, as a worker sent them or a grouping produced them) goes as its own
  message, uncopied, from a thread of its own: the worker reads its input only once the bundle
  has started, which the runner does after this returns."""
  from apache_beam.portability.api import beam_fn_api_pb2
  from apache_beam.runners.portability.fn_api_runner import fn_runner, worker_handlers

  original = getattr(fn_runner.BundleManager, "_send_input_to_worker", None)
  if original is None or not hasattr(worker_handlers, "DATA_BUFFER_TIME_LIMIT_MS"):
    logger.warning("this Apache Beam's DirectRunner differs from 2.77, which lost elements when "
                   "sending large inputs to its workers: running it as it is (the finalize "
                   "checks still refuse a run that lost any)")
    yield
    return

  def send_pieces(manager, process_bundle_id, read_transform_id, pieces):
    channel = manager._worker_handler.data_conn
    if not hasattr(channel, "_enqueue_to_send"):  # in-process workers: no stream, no race
      return original(manager, process_bundle_id, read_transform_id, pieces)

    def send():
      for piece in pieces or []:
        if piece:
          channel._enqueue_to_send(beam_fn_api_pb2.Elements.Data(
              instruction_id=process_bundle_id, transform_id=read_transform_id, data=piece))
      channel._enqueue_to_send(beam_fn_api_pb2.Elements.Data(
          instruction_id=process_bundle_id, transform_id=read_transform_id, is_last=True))

    threading.Thread(target=send, name=f"send-{process_bundle_id}", daemon=True).start()

  saved = worker_handlers.DATA_BUFFER_TIME_LIMIT_MS, original
  worker_handlers.DATA_BUFFER_TIME_LIMIT_MS = 0
  fn_runner.BundleManager._send_input_to_worker = send_pieces
  try:
    yield
  finally:
    worker_handlers.DATA_BUFFER_TIME_LIMIT_MS, fn_runner.BundleManager._send_input_to_worker = saved


class _Drop(logging.Filter):
  def __init__(self, drop):
    super().__init__()
    self.drop = drop

  def filter(self, record) -> bool:
    return not self.drop(record)


def _user_error(record) -> bool:
  """A step's UserError, which Beam logs with its traceback before re-raising it: the CLI
  prints it once, as a message (a bug's traceback is still logged)."""
  return bool(record.exc_info) and isinstance(record.exc_info[1], UserError)


def check_supported(options, runner: str) -> None:
  """Every PrepareOptions field has its Beam equivalent; only the runner is checked."""
  if runner not in RUNNERS:
    raise UserError(f"unknown runner {runner!r}: use local, {', '.join(RUNNERS)}.")


def pipeline_flags(runner: str, beam_options=(), beam_args=()) -> list[str]:
  """Beam's command-line flags: the runner, each `--beam-option key=value` as --key=value
  (a bare `key` as the flag --key), and the arguments given after `--` as they are."""
  flags = [f"--runner={RUNNERS[runner]}"]
  for option in beam_options:
    key, sep, value = option.partition("=")
    key = key.strip().lstrip("-")
    if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
      raise UserError(f"--beam-option {option!r}: write key=value with a Beam pipeline option "
                      "name, e.g. --beam-option direct_num_workers=2.")
    flags.append(f"--{key}={value}" if sep else f"--{key}")
  flags += list(beam_args)
  if any(f.split("=")[0] == "--runner" for f in flags[1:]):
    raise UserError("give the runner with jaxrec's --runner (local, direct, dataflow, flink or "
                    "spark), not as a Beam option.")
  return flags


def prepare_beam(source: Source, out: str, options, overwrite: bool = False,
                 runner: str = "direct", beam_options=(), beam_args=()
                 ) -> storage.PreparedDataset:
  """Runs the pipeline on `runner` and returns the prepared dataset at `out`.

  `out` must be a directory the workers can write (local for the DirectRunner, storage every
  worker mounts for the others): it is written under a temporary name beside `out` and renamed
  when the pipeline has finished, as the local path does."""
  options.validate()
  check_supported(options, runner)
  flags = pipeline_flags(runner, beam_options, beam_args)
  beam = import_beam()
  from apache_beam.options.pipeline_options import PipelineOptions
  started = time.time()
  with storage.atomic_directory(out, overwrite) as tmp:
    pipeline = beam.Pipeline(options=PipelineOptions(flags))
    _build(beam, pipeline, source, tmp, options, runner, started)
    quiet = _Drop(_user_error)
    step_log = logging.getLogger("apache_beam.runners.common")
    step_log.addFilter(quiet)
    try:
      with direct_runner_without_lost_data() if runner == "direct" else contextlib.nullcontext():
        pipeline.run().wait_until_finish()
    except UserError as e:  # raised in a step: Beam appends "[while running 'Step']"
      raise UserError(re.sub(r" \[while running '[^']*'\]$", "", str(e))) from None
    finally:
      step_log.removeFilter(quiet)
    if not os.path.exists(os.path.join(tmp, storage.MANIFEST)):
      raise UserError(f"the {RUNNERS[runner]} pipeline finished without writing "
                      f"{storage.MANIFEST} into {tmp}: its workers must write to the same "
                      "filesystem as this machine (shared storage for a distributed runner).")
  ds = storage.PreparedDataset(out)
  for note in ds.manifest.get("notes", []):
    logger.warning("%s", note)
  return ds


def _read(indexed):
  part, spec = indexed
  log, notes = read_part(spec)
  return part, log, notes


def _num_shards(summary: dict, shards: int | None) -> int:
  return shards or shards_lib.default_num_shards(summary["events"])


def _kcore(beam, batches, k: int):
  """filtering.kcore_mask's rounds, unrolled: each counts the rows left per user and item and
  keeps the rows whose user and item have k. The fixed point is unique, so once reached the
  result equals the local path's; a count after the last round checks that it was reached."""
  single = beam.pvalue.AsSingleton
  selected = (batches | "SummarizeSelected" >> beam.Map(steps.summarize)
              | "MergeSelected" >> beam.CombineGlobally(steps.merge_summaries))
  items = converged = None
  for r in range(KCORE_ROUNDS + 1):
    table = (batches | f"KcoreCounts{r}" >> beam.FlatMap(steps.kcore_counts)
             | f"KcoreSum{r}" >> beam.CombinePerKey(sum)
             | f"KcoreAll{r}" >> beam.combiners.ToList()
             | f"KcoreTable{r}" >> beam.Map(steps.count_table))
    if r == 0:  # the items before filtering: catalogue items among them do not come back
      items = table | "KcoreItems" >> beam.Map(lambda t: t["item"][0].to_pylist())
    if r == KCORE_ROUNDS:
      converged = table | "KcoreConverged" >> beam.Map(steps.kcore_converged, k, KCORE_ROUNDS)
      break
    batches = batches | f"Kcore{r}" >> beam.Map(steps.kcore_keep, single(table), k)
  return batches, {"selected": selected, "items": items, "converged": converged}


def _build(beam, p, source: Source, folder: str, options, runner: str, started: float) -> None:
  single, listed = beam.pvalue.AsSingleton, beam.pvalue.AsList
  read = (p | "Parts" >> beam.Create(list(enumerate(source.parts)))
          | "Spread" >> beam.Reshuffle()
          | "Read" >> beam.Map(_read))
  notes = (read | "PartNotes" >> beam.Map(lambda r: (r[0], r[2]))
           | "AllNotes" >> beam.combiners.ToList())
  raw = read | "Batches" >> beam.Map(lambda r: (r[0], r[1]))
  batches = raw | "KeepEvents" >> beam.Map(steps.keep_events, tuple(options.events))
  kcore = {"selected": None, "items": None, "converged": None}
  if options.kcore:
    batches, kcore = _kcore(beam, batches, options.kcore)

  unfiltered = (raw | "SummarizeRead" >> beam.Map(steps.summarize)
                | "MergeRead" >> beam.CombineGlobally(steps.merge_summaries))
  summary = (batches | "Summarize" >> beam.Map(steps.summarize)
             | "Merge" >> beam.CombineGlobally(steps.merge_summaries))
  if any(isinstance(spec, tuple) for spec in (source.items, source.users)):
    # Side tables read from files are checked against every id of the log, as locally.
    seen = (raw | "SeenIds" >> beam.FlatMap(steps.distinct_ids) | "Distinct" >> beam.Distinct()
            | "AllSeen" >> beam.combiners.ToList())
  else:
    seen = p | "NoSideFiles" >> beam.Create([[]])
  vocabs = (batches | "IdCounts" >> beam.FlatMap(steps.id_counts)
            | "SumIds" >> beam.CombinePerKey(sum)
            | "AllIds" >> beam.combiners.ToList()
            | "Vocabularies" >> beam.Map(steps.build_vocabs, single(summary)))

  users = (batches | "ByUser" >> beam.FlatMap(steps.by_user, single(vocabs))
           | "GroupUsers" >> beam.GroupByKey()
           | "Tokenize" >> beam.Map(steps.tokenize_user, options.merge_gap))
  t1, t2 = options.split_times
  if options.split == "temporal" and 0 < t1 < 1 and 0 < t2 <= 1:  # quantiles of token times
    times = (users | "TimeCounts" >> beam.FlatMap(steps.timestamp_counts)
             | "SumTimes" >> beam.CombinePerKey(sum)
             | "AllTimes" >> beam.combiners.ToList())
  else:
    times = p | "NoTimes" >> beam.Create([[]])
  cutoffs = times | "Cutoffs" >> beam.Map(steps.split_cutoffs, options.split, t1, t2)
  records = users | "Split" >> beam.Map(steps.split_user, single(cutoffs))

  num_shards = summary | "NumShards" >> beam.Map(_num_shards, options.shards)
  keyed = records | "ShardKey" >> beam.Map(steps.shard_key, single(num_shards))
  every = num_shards | "EveryShard" >> beam.FlatMap(steps.every_shard)
  shards = ((keyed, every) | "AllShards" >> beam.Flatten()
            | "GroupShards" >> beam.GroupByKey()
            | "WriteShard" >> beam.Map(steps.write_shard, folder, single(num_shards)))

  per_user = records | "UserSummary" >> beam.Map(steps.user_summary)
  train_counts = (records | "TrainCounts" >> beam.FlatMap(steps.train_item_counts)
                  | "SumTrain" >> beam.CombinePerKey(sum))
  first_seen = (records | "FirstSeen" >> beam.FlatMap(steps.item_first_seen)
                | "MinTime" >> beam.CombinePerKey(min))
  manifest = (p | "Once" >> beam.Create([None])
              | "Finalize" >> beam.Map(
                  beam_finalize.finalize, folder=folder,
                  source=dataclasses.replace(source, parts=[]), options=options,
                  summary=single(summary), unfiltered=single(unfiltered), vocabs=single(vocabs),
                  users=listed(per_user), train_counts=listed(train_counts),
                  first_seen=listed(first_seen), seen=single(seen), part_notes=single(notes),
                  cutoffs=single(cutoffs),
                  **{f"kcore_{k}": v if v is None else single(v) for k, v in kcore.items()}))
  _ = manifest | "Manifest" >> beam.Map(beam_finalize.write_manifest, folder=folder,
                                        shards=listed(shards), runner=runner, started=started)
