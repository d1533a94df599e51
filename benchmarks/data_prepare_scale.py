"""Preparation at scale (issue 23): `local` beside Beam's DirectRunner on both cores.

    python benchmarks/data_prepare_scale.py                        # 10M and 50M events: a quiet machine
    python benchmarks/data_prepare_scale.py --events 1000000       # minutes

For each size, one synthetic log (users = events / 50, items = events / 500, at least 2,000) is
prepared twice, each in its own process: `--runner local` (in memory) and `--runner direct`
with direct_num_workers=2, direct_running_mode=multi_processing. The parent samples the whole
process tree every 0.2 s (Beam's worker subprocesses included) and reports wall seconds (log
generation included: both engines generate it, Beam by user chunk in its workers), events/s,
the peak of the tree's summed RSS and of its largest process. The two directories are then
compared field by field (vocabularies, splits, counts, side features, statistics, every token
shard record by record). Prints a table; writes benchmarks/results/data_prepare_scale.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import ROOT, print_table, write_result  # noqa: E402

sys.path.insert(0, ROOT)

ENGINES = {"local": [], "direct x2": ["direct_num_workers=2",
                                      "direct_running_mode=multi_processing"]}
SAMPLE_SECONDS = 0.2


def synthetic(events: int) -> dict:
  return {"num_events": events, "num_users": max(1000, events // 50),
          "num_items": max(2000, events // 500), "seed": 0}


def child(engine: str, events: int, out: str) -> None:
  """Prepares one log with one engine, in this process; prints the seconds it took."""
  from jaxrec.data.prepare import PrepareOptions, prepare_source
  started = time.perf_counter()
  ds = prepare_source("synthetic", out, PrepareOptions(), synthetic=synthetic(events),
                      runner="local" if engine == "local" else "direct",
                      beam_options=ENGINES[engine])
  print(json.dumps({"seconds": time.perf_counter() - started,
                    "interactions": ds.stats["interactions"], "tokens": ds.stats["tokens"],
                    "users": ds.stats["users"], "shards": len(ds.manifest["shards"])}))


def _tree_rss(proc) -> tuple[int, int, int]:
  """(summed RSS, largest RSS, processes) of a process and all its descendants, now."""
  import psutil
  total = largest = count = 0
  try:
    members = [proc] + proc.children(recursive=True)
  except psutil.NoSuchProcess:
    return 0, 0, 0
  for p in members:
    try:
      rss = p.memory_info().rss
    except (psutil.NoSuchProcess, psutil.AccessDenied):
      continue
    total, largest, count = total + rss, max(largest, rss), count + 1
  return total, largest, count


def _memory_gib() -> float:
  return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30


def measure(engine: str, events: int, out: str, max_rss_gib: float) -> dict:
  """One engine's run in a child process tree, stopped (and reported as failed) if the tree's
  RSS passes max_rss_gib, before the kernel's OOM killer picks a victim on a shared machine."""
  import psutil
  proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--child", engine,
                           "--events", str(events), "--out", out],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                          start_new_session=True)
  watched = psutil.Process(proc.pid)
  peak_total = peak_largest = most = 0
  started, failure = time.perf_counter(), None
  while proc.poll() is None:
    total, largest, count = _tree_rss(watched)
    peak_total, peak_largest = max(peak_total, total), max(peak_largest, largest)
    most = max(most, count)
    if total > max_rss_gib * 2**30:
      os.killpg(proc.pid, signal.SIGKILL)
      failure = f"stopped at {total / 2**30:.1f} GiB RSS (limit {max_rss_gib:g} GiB)"
      break
    time.sleep(SAMPLE_SECONDS)
  stdout, stderr = proc.communicate()
  memory = dict(peak_rss_gib=peak_total / 2**30, peak_rss_largest_gib=peak_largest / 2**30,
                processes=most, engine=engine)
  if failure or proc.returncode:
    failure = failure or f"exit {proc.returncode}: {stderr.strip().splitlines()[-1:]}"
    return dict(memory, failed=failure, seconds=time.perf_counter() - started)
  result = json.loads(stdout.strip().splitlines()[-1])
  result.update(memory, events_per_second=result["interactions"] / result["seconds"])
  return result


def differences(a_path: str, b_path: str) -> list[str]:
  """What differs between two prepared directories; [] when they are identical."""
  import numpy as np
  from array_record.python import array_record_module
  from jaxrec.data.storage import PreparedDataset
  a, b = PreparedDataset(a_path), PreparedDataset(b_path)
  found = []
  if sorted(a.vocabs) != sorted(b.vocabs):
    found.append(f"vocabularies {sorted(a.vocabs)} != {sorted(b.vocabs)}")
  found += [f"vocab/{name}" for name in a.vocabs if name in b.vocabs
            and not a.vocabs[name] == b.vocabs[name]]
  found += [f"splits.{name}" for name in ("train_end", "valid_end", "length")
            if not np.array_equal(getattr(a.splits, name), getattr(b.splits, name))]
  for table in ("item_counts.npz", "item_features.npz", "user_features.npz"):
    x, y = a._load(table), b._load(table)
    if sorted(x) != sorted(y):
      found.append(f"{table} keys")
    found += [f"{table}:{key}" for key in x if key in y and not (
        x[key].dtype == y[key].dtype  # NaN (no release time) equals NaN
        and np.array_equal(x[key], y[key], equal_nan=x[key].dtype.kind in "fc"))]
  if a.stats != b.stats:
    found.append("stats")
  listed_a, listed_b = a.manifest["shards"], b.manifest["shards"]
  if listed_a != listed_b:
    return found + ["shard list"]
  for entry in listed_a:  # one shard at a time: memory stays one shard's
    records = []
    for ds in (a, b):
      reader = array_record_module.ArrayRecordReader(os.path.join(ds.path, entry["file"]))
      records.append(reader.read_all())
      reader.close()
    if records[0] != records[1]:
      found.append(entry["file"])
  return found


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--events", default="10000000,50000000",
                      help="comma-separated log sizes (events), e.g. 1e6,2e6")
  parser.add_argument("--work", help="where the prepared directories go (default: a temp dir, "
                                     "removed afterwards)")
  parser.add_argument("--max-rss-gib", type=float, default=0.8 * _memory_gib(),
                      help="stop a run whose process tree passes this RSS (default: 80%% of RAM)")
  parser.add_argument("--child", choices=ENGINES, help=argparse.SUPPRESS)
  parser.add_argument("--out", help=argparse.SUPPRESS)
  args = parser.parse_args()
  sizes = [int(float(x)) for x in args.events.split(",") if x.strip()]
  if args.child:
    child(args.child, sizes[0], args.out)
    return
  work = args.work or tempfile.mkdtemp(prefix="prepare_scale_")
  load_before = os.getloadavg()
  runs, rows = [], []
  try:
    for events in sizes:
      outs = {}
      for engine in ENGINES:
        outs[engine] = os.path.join(work, f"{events}-{engine.replace(' ', '')}")
        shutil.rmtree(outs[engine], ignore_errors=True)
        run = measure(engine, events, outs[engine], args.max_rss_gib)
        run["events"] = events
        runs.append(run)
        print(f"{events:,} events, {engine}: {run['seconds']:.1f} s, peak RSS "
              f"{run['peak_rss_gib']:.2f} GiB {run.get('failed', '')}", flush=True)
      failed = [run["failed"] for run in runs[-len(ENGINES):] if "failed" in run]
      found = differences(*outs.values()) if not failed else []
      for run in runs[-len(ENGINES):]:
        run["identical_to_local"] = None if failed else not found
        run["differences"] = found
        if "failed" in run:
          rows.append([f"{events:,}", run["engine"], f"{run['seconds']:.1f}", "-",
                       f"{run['peak_rss_gib']:.2f}", f"{run['peak_rss_largest_gib']:.2f}",
                       run["processes"], "-", "FAILED: " + run["failed"]])
          continue
        rows.append([f"{events:,}", run["engine"], f"{run['seconds']:.1f}",
                     f"{run['events_per_second']:,.0f}", f"{run['peak_rss_gib']:.2f}",
                     f"{run['peak_rss_largest_gib']:.2f}", run["processes"], run["shards"],
                     "-" if failed else "yes" if not found else "NO: " + ", ".join(found[:3])])
      for path in outs.values():
        shutil.rmtree(path, ignore_errors=True)
  finally:
    if not args.work:
      shutil.rmtree(work, ignore_errors=True)
  load_after = os.getloadavg()
  print()
  print_table(["events", "engine", "seconds", "events/s", "peak RSS GiB (all)",
               "largest GiB", "procs", "shards", "identical"], rows)
  print(f"load average (1 min) before {load_before[0]:.1f}, after {load_after[0]:.1f}, on "
        f"{os.cpu_count()} cores")
  path = write_result("data_prepare_scale", {
      "runs": runs, "synthetic": {str(n): synthetic(n) for n in sizes},
      "beam_options": ENGINES["direct x2"], "sample_seconds": SAMPLE_SECONDS,
      "load_average_1min": {"before": load_before[0], "after": load_after[0]}})
  print(f"wrote {path}")


if __name__ == "__main__":
  main()
