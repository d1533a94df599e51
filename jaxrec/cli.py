"""`jaxrec` command line. Thin: parsing and printing only; the work happens in the library.

Mistakes a user can fix (`UserError`) print as one message and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from jaxrec.errors import UserError


def _split_times(text: str) -> tuple[float, float]:
  try:
    t1, t2 = (float(x) for x in text.split(","))
  except ValueError:
    raise argparse.ArgumentTypeError(
        f"expected two numbers 't1,t2' (quantiles like 0.8,0.9 or Unix seconds), got {text!r}")
  return t1, t2


def _data_parser(sub) -> None:
  data = sub.add_parser("data", help="prepare and inspect datasets")
  data_sub = data.add_subparsers(dest="action", required=True)

  prep = data_sub.add_parser("prepare", help="turn a source into a prepared dataset directory")
  prep.add_argument("--dataset", required=True,
                    help="movielens-100k | movielens-1m | movielens-20m | movielens-25m | "
                         "synthetic | csv | parquet")
  prep.add_argument("--out", required=True, help="directory to create")
  prep.add_argument("--data-dir", help="download cache (default $JAXREC_DATA_DIR or ~/.cache/jaxrec)")
  prep.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
  prep.add_argument("--split", default="loo", help="loo (leave-one-out by time) or temporal")
  prep.add_argument("--split-times", type=_split_times, default=(0.8, 0.9),
                    help="temporal split cut-offs t1,t2: quantiles or Unix seconds")
  prep.add_argument("--kcore", type=int, default=0, help="keep users/items with >= k interactions")
  prep.add_argument("--merge-gap", type=int, default=1800,
                    help="merge a user's consecutive events on one item within this many seconds")
  prep.add_argument("--no-merge", action="store_true", help="one token per event")
  mine = prep.add_argument_group("your own logs (--dataset csv|parquet)")
  mine.add_argument("--path", help="the events file")
  mine.add_argument("--columns", help="mapping of our fields to your columns, e.g. "
                                      "user=uid,item=movie,timestamp=ts,event=action,value=rating")
  mine.add_argument("--delimiter", default=",", help="CSV field separator")
  mine.add_argument("--items", help="optional item side table (CSV or Parquet)")
  mine.add_argument("--users", help="optional user side table (CSV or Parquet)")
  synth = prep.add_argument_group("synthetic data (--dataset synthetic)")
  for name in ("num-users", "num-items", "num-events", "seed"):
    synth.add_argument(f"--{name}", type=int)

  stats = data_sub.add_parser("stats", help="print a prepared dataset's statistics")
  stats.add_argument("dir")
  stats.add_argument("--json", action="store_true", help="one JSON object")

  show = data_sub.add_parser("show", help="print a few users' tokenized histories")
  show.add_argument("dir")
  show.add_argument("--users", type=int, default=3)
  show.add_argument("--tokens", type=int, default=10)


def _run_data(args) -> None:
  from jaxrec.data import inspect, sources
  from jaxrec.data.storage import PreparedDataset
  if args.action == "prepare":
    from jaxrec.data.prepare import PrepareOptions, prepare
    columns = None
    if args.columns:
      from jaxrec.data.tabular import parse_column_mapping
      columns = parse_column_mapping(args.columns)
    synthetic = {k: getattr(args, k) for k in ("num_users", "num_items", "num_events", "seed")
                 if getattr(args, k) is not None}
    raw = sources.load_raw(args.dataset, data_dir=args.data_dir, path=args.path, columns=columns,
                           delimiter=args.delimiter, items_path=args.items,
                           users_path=args.users, synthetic=synthetic)
    options = PrepareOptions(split=args.split, split_times=args.split_times, kcore=args.kcore,
                             merge_gap=None if args.no_merge else args.merge_gap)
    ds = prepare(raw, args.out, options, overwrite=args.overwrite)
    print(f"prepared {ds.path} in {ds.manifest['seconds']} s")
    print(inspect.format_stats(ds))
  elif args.action == "stats":
    ds = PreparedDataset(args.dir)
    print(json.dumps(ds.stats) if args.json else inspect.format_stats(ds))
  elif args.action == "show":
    ds = PreparedDataset(args.dir)
    for user in range(2, 2 + min(args.users, ds.num_users)):
      print(inspect.format_history(ds, user, args.tokens))


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="jaxrec", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  _data_parser(sub)
  args = parser.parse_args(argv)
  try:
    if args.command == "data":
      _run_data(args)
  except UserError as e:
    print(f"jaxrec: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
