"""Data-layer throughput: synthetic generation, preparation, and the Grain sequence pipeline.

    python benchmarks/data_pipeline.py                 # 1M users x 1M items x 50M events
    python benchmarks/data_pipeline.py --events 2e6 --users 1e5 --items 1e5   # quicker

Prints one table and writes benchmarks/results/data_pipeline.json. The sequence pipeline
(batch 256 x length 200) is measured beside the textbook Grain pipeline in the same run: a
per-element ArrayRecord source -> global shuffle -> per-user pad -> batch, which is what jaxrec's
batch-level pipeline replaces.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

import grain
import numpy as np

from jaxrec.data import pipelines
from jaxrec.data.prepare import PrepareOptions, prepare
from jaxrec.data.storage import decode
from jaxrec.data.synthetic import SyntheticConfig, generate

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
BATCH, LENGTH = 256, 200


def peak_rss_gib() -> float:
  return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def sequences_per_second(iterator, batches: int) -> float:
  next(iterator)  # start-up (threads, file handles) is not throughput
  started = time.perf_counter()
  for _ in range(batches):
    next(iterator)
  return batches * BATCH / (time.perf_counter() - started)


def reference_pipeline(ds, seed: int = 0) -> grain.IterDataset:
  """The per-element Grain pipeline: one record, one shuffle lookup, one pad per sequence."""
  part = ds.host_part(0, 1)
  # The source reads the shards one after another: position -> that record's training end.
  train_end = np.empty(len(part.records), np.int64)
  train_end[part.positions] = ds.splits.train_end[part.records]

  def pad(record_and_index):
    index, record = record_and_index
    tokens = decode(record)[:train_end[index]][-(LENGTH + 1):]
    out = np.zeros(LENGTH + 1, np.int32)
    out[LENGTH + 1 - len(tokens):] = tokens["item"]
    return {"inputs": out[:-1], "targets": out[1:]}

  source = grain.sources.ArrayRecordDataSource(part.paths)
  data = (grain.MapDataset.source(source).map_with_index(lambda i, r: (i, r))
          .shuffle(seed=seed).repeat(None).map(pad).batch(BATCH, drop_remainder=True))
  return data.to_iter_dataset(grain.ReadOptions(num_threads=2, prefetch_buffer_size=4))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--users", type=float, default=1e6)
  parser.add_argument("--items", type=float, default=1e6)
  parser.add_argument("--events", type=float, default=5e7)
  parser.add_argument("--batches", type=int, default=200)
  parser.add_argument("--workdir", default=None, help="where the prepared data goes (temp dir)")
  args = parser.parse_args()
  config = SyntheticConfig(num_users=int(args.users), num_items=int(args.items),
                           num_events=int(args.events))

  started = time.perf_counter()
  raw = generate(config)
  generate_s = time.perf_counter() - started
  events = len(raw.events)
  print(f"generated {events:,} events in {generate_s:.1f} s (peak RSS {peak_rss_gib():.1f} GiB)",
        flush=True)

  with tempfile.TemporaryDirectory(dir=args.workdir) as tmp:
    started = time.perf_counter()
    ds = prepare(raw, os.path.join(tmp, "synthetic"), PrepareOptions())
    prepare_s = time.perf_counter() - started
    del raw
    print(f"prepared {ds.stats['tokens']:,} tokens in {prepare_s:.1f} s "
          f"(peak RSS {peak_rss_gib():.1f} GiB)", flush=True)
    options = pipelines.PipelineOptions(batch_size=BATCH, num_epochs=None)
    ours = sequences_per_second(
        iter(pipelines.sequence_dataset(ds, max_len=LENGTH, options=options)), args.batches)
    reference = sequences_per_second(iter(reference_pipeline(ds)), max(args.batches // 4, 10))
    tokens_per_user = ds.stats["tokens_per_user"]["mean"]

  rows = [
      ("synthetic generation", "events/s", events / generate_s, None),
      ("preparation (vocab, sort, tokenize, split, write)", "events/s", events / prepare_s, None),
      (f"sequence pipeline, batch {BATCH} x length {LENGTH}", "sequences/s", ours, reference),
  ]
  print()
  print(f"{'measure':52} {'unit':12} {'jaxrec':>12} {'reference':>12} {'speed-up':>9}")
  for name, unit, value, ref in rows:
    ref_text = f"{ref:12,.0f}" if ref else f"{'-':>12}"
    ratio = f"{value / ref:8.1f}x" if ref else f"{'-':>9}"
    print(f"{name:52} {unit:12} {value:12,.0f} {ref_text} {ratio}")
  print(f"\n{events:,} events, {config.num_users:,} users, {config.num_items:,} items, "
        f"{tokens_per_user:.1f} tokens/user; reference = per-element Grain pipeline; "
        f"peak RSS {peak_rss_gib():.1f} GiB; {os.cpu_count()} CPU cores")

  os.makedirs(RESULTS, exist_ok=True)
  result = {
      "config": {"users": config.num_users, "items": config.num_items, "events": events,
                 "batch": BATCH, "length": LENGTH},
      "generation_events_per_s": events / generate_s, "generation_s": generate_s,
      "preparation_events_per_s": events / prepare_s, "preparation_s": prepare_s,
      "sequence_pipeline_sequences_per_s": ours,
      "reference_pipeline_sequences_per_s": reference,
      "peak_rss_gib": peak_rss_gib(),
      "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0],
                  "platform": platform.platform()},
      "date": time.strftime("%Y-%m-%d"),
  }
  with open(os.path.join(RESULTS, "data_pipeline.json"), "w") as f:
    json.dump(result, f, indent=2)


if __name__ == "__main__":
  main()
