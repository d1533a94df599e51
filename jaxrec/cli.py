"""`jaxrec` command line. Thin: parsing and printing only; the work happens in the library.

Mistakes a user can fix (`UserError`) print as one message and exit 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys

from jaxrec.data.tokenize import MERGE_GAP
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
                         "synthetic | synthetic-long | csv | parquet")
  prep.add_argument("--out", required=True, help="directory to create")
  prep.add_argument("--data-dir", help="download cache (default $JAXREC_DATA_DIR or ~/.cache/jaxrec)")
  prep.add_argument("--overwrite", action="store_true", help="replace --out if it exists")
  prep.add_argument("--split", default="loo", help="loo (leave-one-out by time) or temporal")
  prep.add_argument("--split-times", type=_split_times, default=(0.8, 0.9),
                    help="temporal split cut-offs t1,t2: quantiles or Unix seconds")
  prep.add_argument("--kcore", type=int, default=0, help="keep users/items with >= k interactions")
  prep.add_argument("--merge-gap", type=int, default=MERGE_GAP,
                    help="merge a user's consecutive events on one item within this many seconds")
  prep.add_argument("--no-merge", action="store_true", help="one token per event")
  prep.add_argument("--events", default="",
                    help="keep only these event types, e.g. click,play,like (default: all)")
  prep.add_argument("--shards", type=int,
                    help="token files, split by user; each of N training hosts reads every N-th "
                         "(default: one per ~250k events, a power of two)")
  beam = prep.add_argument_group(
      "engine", "local: one in-memory process (the default); a Beam runner runs the same "
      "preparation as an Apache Beam pipeline (pip install 'jaxrec[beam]'), with Beam's own "
      "pipeline options given by --beam-option or after `--`")
  beam.add_argument("--runner", default="local",
                    choices=("local", "direct", "dataflow", "flink", "spark"))
  beam.add_argument("--beam-option", action="append", default=[], metavar="KEY=VALUE",
                    help="a Beam pipeline option, repeatable: e.g. direct_num_workers=2, "
                         "project=P, region=R, temp_location=gs://b/tmp")
  beam.add_argument("beam_args", nargs="*", metavar="-- BEAM_ARGS",
                    help="Beam pipeline arguments, as Beam spells them (after `--`)")
  mine = prep.add_argument_group("your own logs (--dataset csv|parquet)")
  mine.add_argument("--path", help="the events file (with a Beam runner also a directory of "
                                   "part files or a quoted glob)")
  mine.add_argument("--columns", help="mapping of our fields to your columns, e.g. "
                                      "user=uid,item=movie,timestamp=ts,event=action,value=rating")
  mine.add_argument("--delimiter", default=",", help="CSV field separator")
  mine.add_argument("--time-unit", choices=("s", "ms", "us", "ns"),
                    help="what epoch-number timestamps count since 1970 (default: detected from "
                         "their size, and said)")
  mine.add_argument("--block-size-mb", type=float,
                    help="CSV reader block in MB; must exceed the longest line (default 1)")
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
  from jaxrec.data import inspect
  from jaxrec.data.storage import PreparedDataset
  if args.action == "prepare":
    from jaxrec.data.prepare import PrepareOptions, prepare_source
    columns = None
    if args.columns:
      from jaxrec.data.tabular import parse_column_mapping
      columns = parse_column_mapping(args.columns)
    synthetic = {k: getattr(args, k) for k in ("num_users", "num_items", "num_events", "seed")
                 if getattr(args, k) is not None}
    options = PrepareOptions(split=args.split, split_times=args.split_times, kcore=args.kcore,
                             merge_gap=None if args.no_merge else args.merge_gap,
                             events=tuple(e for e in args.events.split(",") if e),
                             shards=args.shards)
    if args.runner == "local" and (args.beam_option or args.beam_args):
      given = " ".join(args.beam_option + args.beam_args)
      raise UserError(f"--beam-option and arguments after `--` ({given}) apply to a Beam "
                      "runner: add --runner direct (or dataflow, flink, spark).")
    ds = prepare_source(args.dataset, args.out, options, runner=args.runner,
                        overwrite=args.overwrite, beam_options=args.beam_option,
                        beam_args=args.beam_args, data_dir=args.data_dir, path=args.path,
                        columns=columns, delimiter=args.delimiter, items_path=args.items,
                        users_path=args.users, time_unit=args.time_unit,
                        block_size_mb=args.block_size_mb, synthetic=synthetic)
    engine = "" if args.runner == "local" else f" with {args.runner}"
    print(f"prepared {ds.path}{engine} in {ds.manifest['seconds']} s")
    print(inspect.format_stats(ds))
  elif args.action == "stats":
    ds = PreparedDataset(args.dir)
    print(json.dumps(ds.stats) if args.json else inspect.format_stats(ds))
  elif args.action == "show":
    ds = PreparedDataset(args.dir)
    for user in range(2, 2 + min(args.users, ds.num_users)):
      print(inspect.format_history(ds, user, args.tokens))


def _train_parsers(sub) -> None:
  train = sub.add_parser("train", help="train a model from a config file",
                         epilog="Override any config field with --config.a.b=value.")
  train.add_argument("--config", required=True, help="configs/FILE.py or configs/FILE.py:arg")
  train.add_argument("--workdir", required=True, help="checkpoints, metrics and results go here")
  train.add_argument("--init-from", metavar="WORKDIR",
                     help="start from this earlier run's best checkpoint: vocabularies grow by raw "
                          "id, and only data after its cut-off trains (train.new_data_only)")
  train.add_argument("--config-changes-ok", metavar="KEY,...", default="",
                     help="resuming a workdir: continue with these config keys (or groups) changed "
                          "from its config.json; they are recorded in config_changes.json. Any "
                          "other change is refused")
  evaluate = sub.add_parser("eval", help="evaluate a trained workdir's best checkpoint",
                            epilog="Change how it is evaluated (not the model) with "
                                   "--config.eval.KEY=VALUE, e.g. --config.eval.exclude_seen=False "
                                   "(RecBole's sequential protocol) or --config.eval.max_targets=0 "
                                   "(every interaction of the window).")
  evaluate.add_argument("--workdir", required=True)
  evaluate.add_argument("--split", default="test", help="valid or test")
  evaluate.add_argument("--json", action="store_true", help="one JSON object")
  export = sub.add_parser("export", help="write a trained workdir's retrieval bundle (item "
                                         "vectors, ScaNN index, parameters, vocabularies)")
  export.add_argument("--workdir", required=True, help="a two_tower, sequential or bpr workdir")
  export.add_argument("--out", required=True, help="export root: the bundle goes to OUT/<version>")
  export.add_argument("--version", type=int, help="default: one more than the highest in --out")
  export.add_argument("--ranker", help="a ranking workdir to serve with it (same dataset)")
  index = export.add_argument_group(
      "index (default: tuned to --target-recall on half the validation queries, measured on the "
      "other half)")
  index.add_argument("--target-recall", type=float, default=0.95,
                     help="recall@K against exact search the index must reach (default 0.95)")
  index.add_argument("--recall-k", type=int, default=100, help="K of that recall (default 100)")
  index.add_argument("--accept-recall", type=float,
                     help="accept a lower recall, at least this, when no setting within the "
                          "latency cap reaches the target (otherwise the export fails, exit 2)")
  index.add_argument("--max-latency-ms", type=float,
                     help="latency cap per query on one thread (default: half of exact search's, "
                          "at least 1 ms)")
  index.add_argument("--exact", action="store_true", help="brute-force search, no ScaNN tree")
  index.add_argument("--num-leaves", type=int,
                     help="with --leaves-to-search/--reorder: the tree as given, untuned")
  index.add_argument("--leaves-to-search", type=int)
  index.add_argument("--reorder", type=int, help="candidates re-scored exactly")
  serve = sub.add_parser("serve", help="serve recommendations over HTTP from an export directory",
                         epilog="The newest bundle in --export serves; newer ones are loaded as "
                                "they appear.")
  serve.add_argument("--export", required=True, help="export root written by `jaxrec export` "
                                                     "(bundles OUT/<version>); without --ranker "
                                                     "the retrieval score ranks")
  serve.add_argument("--host", default="127.0.0.1")
  serve.add_argument("--port", type=int, default=8000)
  serve.add_argument("--candidates", type=int, default=1000, help="retrieved and ranked per request")
  serve.add_argument("--mmr-lambda", type=float, default=0.7, help="1 = pure relevance")
  serve.add_argument("--freshness-slots", type=int, default=1,
                     help="places kept for items added in the last day")
  serve.add_argument("--explore-slots", type=int, default=1,
                     help="Thompson-sampled places for items with few impressions")
  serve.add_argument("--genre-cap", type=int, help="at most this many items per first genre")
  serve.add_argument("--decision-log", metavar="DIR",
                     help="append every answer (request id, user, items, propensities) and the "
                          "feedback quoting its request_id to DIR, for off-policy evaluation")
  serve.add_argument("--blocked", default="", help="item ids never to show, comma-separated")
  serve.add_argument("--max-batch", type=int, default=8,
                     help="requests answered together (8 take ~35 ms on 2 CPU cores)")
  serve.add_argument("--max-wait-ms", type=float, default=2.0)
  serve.add_argument("--max-queue", type=int, default=256, help="beyond this, 503 at once")
  serve.add_argument("--api-key", help="required as `Authorization: Bearer KEY` by /v1/feedback "
                     "(default: $JAXREC_API_KEY; none: feedback is open)")
  serve.add_argument("--api-key-file", help="read the API key from this file")
  serve.add_argument("--feedback-rate", type=float, default=20.0,
                     help="feedback requests per second per client (bursts of twice as many)")
  serve.add_argument("--state", metavar="redis://HOST:PORT/DB",
                     help="keep the exploration state (posterior counts, answers feedback may "
                     "quote) in this Redis, shared by every replica naming it and kept across "
                     "restarts (default: in the process)")
  serve.add_argument("--compilation-cache", metavar="DIR",
                     help="keep compiled models here, so reloads and restarts skip compiling "
                     "(default: $JAX_COMPILATION_CACHE_DIR, else ~/.cache/jaxrec/xla; '' for none)")


def _simulation_parsers(sub) -> None:
  simulate = sub.add_parser("simulate", help="run a bundle's policy in the synthetic world it was "
                                             "trained on, for N days")
  simulate.add_argument("--policy", required=True, metavar="BUNDLE",
                        help="export bundle (or export root) of models trained on a synthetic "
                             "dataset: `jaxrec export --workdir TWO_TOWER --ranker DLRM --out DIR`")
  simulate.add_argument("--days", type=int, required=True)
  simulate.add_argument("--users", type=int, help="the first N of the dataset's users (default all)")
  simulate.add_argument("--k", type=int, default=10, help="slate size")
  simulate.add_argument("--seed", type=int, default=0)
  simulate.add_argument("--mmr-lambda", type=float, default=0.7, help="1 = pure relevance")
  simulate.add_argument("--temperature", type=float,
                        help="sample slates (Plackett-Luce) from softmax(score / T) over the "
                             "ranker's top --candidates instead: a logging policy whose "
                             "propensities --log records")
  simulate.add_argument("--candidates", type=int, default=20)
  simulate.add_argument("--out", required=True, help="simulation.json, days.png (and the log) go here")
  simulate.add_argument("--log", action="store_true",
                        help="write the decisions with propensities (OUT/decisions.npz, log.json)")
  evaluate = sub.add_parser("ope", help="off-policy estimates of a policy's value from a "
                                        "simulation log")
  evaluate.add_argument("--logs", required=True,
                        help="a directory written by simulate --log, or a serving decision log "
                             "(jaxrec serve --decision-log DIR)")
  evaluate.add_argument("--policy", required=True, metavar="BUNDLE",
                        help="the target: an export bundle trained on the log's world")
  evaluate.add_argument("--temperature", type=float,
                        help="target samples from softmax(score / T); default: its top item")
  evaluate.add_argument("--candidates", type=int, default=20)
  evaluate.add_argument("--mmr-lambda", type=float, default=0.7,
                        help="serving decision logs: the target pipeline's MMR lambda")
  evaluate.add_argument("--reward", default="click", help="click, watch or like of the first slot")
  evaluate.add_argument("--max-weight", type=float, default=10.0, help="clipped IPS's clip")
  evaluate.add_argument("--bootstrap", type=int, default=1000, help="resamples per interval")
  evaluate.add_argument("--seed", type=int, default=0)
  evaluate.add_argument("--out", help="write OUT/ope.json")


def _run_simulate(args) -> None:
  from jaxrec.eval.simulation.days import format_days
  from jaxrec.serve.simulate import simulate
  result = simulate(args.policy, args.days, args.out, users=args.users, k=args.k, seed=args.seed,
                    mmr_lambda=args.mmr_lambda, temperature=args.temperature,
                    candidates=args.candidates, log=args.log)
  print(f"{result['policy']} on {result['users']} users, k={args.k}:")
  print(format_days(result["days"]))
  print(f"wrote {args.out}/simulation.json, {args.out}/days.png"
        + (f", {args.out}/decisions.npz, {args.out}/log.json" if args.log else ""))


def _run_ope(args) -> None:
  import os

  from jaxrec.eval.offpolicy import decision_log
  from jaxrec.serve import replay
  from jaxrec.serve.simulate import evaluate_log
  if os.path.exists(os.path.join(args.logs, decision_log.DECISIONS)):
    result = replay.evaluate(args.logs, args.policy, args.out, mmr_lambda=args.mmr_lambda,
                             n_boot=args.bootstrap, seed=args.seed)
  else:
    result = evaluate_log(args.logs, args.policy, args.out, temperature=args.temperature,
                          candidates=args.candidates, reward=args.reward,
                          max_weight=args.max_weight, n_boot=args.bootstrap, seed=args.seed)
  print(f"target {result['target_policy']}; logged by {result['logging_policy']}; "
        f"value = expected {result['reward']}")
  print(result["table"])
  if args.out:
    print(f"wrote {args.out}/ope.json")


def _format_metrics(rows: dict[str, dict], keys: list[str]) -> str:
  widths = [max(12, len(k) + 2) for k in keys]
  first = max([14] + [len(name) + 1 for name in rows])
  lines = [f"{'':{first}}" + "".join(f"{k:>{w}}" for k, w in zip(keys, widths))]
  for name, values in rows.items():
    lines.append(f"{name:{first}}" + "".join(f"{values[k]:{w}.4f}" for k, w in zip(keys, widths)))
  return "\n".join(lines)


def _run_train(args, overrides: list[str]) -> None:
  from jaxrec.parallel.distributed import initialize
  initialize()  # joins the other hosts of a pod slice; before anything else touches JAX
  from jaxrec.config import apply_overrides, load_config
  from jaxrec.eval.metrics.popularity import evaluate_popularity
  from jaxrec.train.trainer import train
  if args.init_from:  # a config field, so the run's config.json records it
    overrides = [f"train.init_from={args.init_from}", *overrides]
  config = apply_overrides(load_config(args.config), overrides)
  results = train(config, args.workdir,
                  config_changes_ok=tuple(k.strip() for k in args.config_changes_ok.split(",")
                                          if k.strip()))
  rows = _by_history(config.model.name, results["test"])
  if config.task not in ("baseline", "ranking"):  # popularity ranks items, not impressions
    from jaxrec.train.trainer import build_task
    rows.update(_by_history("popularity", evaluate_popularity(build_task(config), "test",
                                                               tuple(config.eval.ks))))
  keys = [k for k in results["test"] if ("@" in k or "/" in k) and not k.startswith("sampled_")
          and not k.startswith(("with_history/", "no_history/"))]
  print(f"\n{results.get('protocol_detail', results['protocol'])}; best step "
        f"{results['best_step']}")
  print(_format_metrics(rows, keys))
  if "beyond_accuracy" in results:
    from jaxrec.eval.metrics.lists import format_report
    print(format_report(results["beyond_accuracy"]))


def _by_history(name: str, result: dict) -> dict[str, dict]:
  """A result's table rows: overall, then each group of users it reports apart (with_history/...,
  no_history/... on a temporal split) under its own name."""
  rows = {name: result}
  for group in ("with_history", "no_history"):
    part = {k.split("/", 1)[1]: v for k, v in result.items() if k.startswith(f"{group}/")}
    if part.get("num_users"):
      rows[f"  {name}, {group.replace('_', ' ')}"] = part
  return rows


def _run_eval(args, overrides: list[str]) -> None:
  from jaxrec.train.evaluate import evaluate_workdir
  result = evaluate_workdir(args.workdir, args.split, overrides)
  if args.json:
    print(json.dumps(result))
  else:
    from jaxrec.eval.metrics.lists import format_report
    print(result.get("protocol_detail", result["protocol"]))
    print(_format_metrics(_by_history(result["model"], result),
                          [k for k in result if "@" in k and "/" not in k]))
    print(format_report(result["beyond_accuracy"]))


def _run_export(args) -> None:
  from jaxrec.train.export import export_workdir
  overrides = {name: value for name, value in (
      ("num_leaves", args.num_leaves), ("num_leaves_to_search", args.leaves_to_search),
      ("reorder", args.reorder)) if value is not None}
  path, manifest = export_workdir(args.workdir, args.out, args.version, exact=args.exact,
                                  index_overrides=overrides, ranker=args.ranker,
                                  target_recall=args.target_recall, recall_k=args.recall_k,
                                  accept_recall=args.accept_recall,
                                  max_latency_ms=args.max_latency_ms)
  recall = manifest["recall"]
  tuning = recall.get("tuning")
  k = tuning["recall_k"] if tuning else 100
  queries = (f"{recall['queries']} held-out validation queries not used for tuning" if tuning
             else f"{recall['queries']} validation queries")
  print(f"exported {path}: {manifest['num_items']} items x {manifest['dim']}, "
        f"{'exact' if manifest['index'].get('exact') else 'ScaNN'} index, recall@10 "
        f"{recall['recall@10']:.3f} recall@{k} {recall[f'recall@{k}']:.3f} against exact search "
        f"on {queries}")
  if tuning and tuning.get("latency_ms_per_query") is not None:
    print(f"  tuned to recall@{k} {tuning['target_recall']} in {tuning['tuning_seconds']:.1f} s: "
          f"{tuning['chosen']['structure']}, {tuning['chosen']['num_leaves_to_search']} leaves "
          f"searched, {tuning['chosen']['reorder']} re-scored, "
          f"{tuning['latency_ms_per_query']:.3f} ms/query on one thread")
  if tuning and not tuning["target_met"]:
    print(f"  below the target {tuning['target_recall']}: accepted with --accept-recall "
          f"{tuning['accept_recall']}" if tuning["accept_recall"] else
          f"  held-out recall fell short of the target {tuning['target_recall']} that tuning "
          "reached", file=sys.stderr)


def _run_serve(args) -> None:
  try:
    import uvicorn
    from serving.app import create_app
    from serving.feedback_guard import resolve_api_key
    from serving.limits import server_config
  except ModuleNotFoundError as e:
    if (e.name or "").split(".")[0] not in ("fastapi", "starlette", "uvicorn", "httpx",
                                             "prometheus_client", "pydantic"):
      raise
    raise UserError(f"`jaxrec serve` needs the serve extra ({e.name} is not installed): "
                    "pip install 'jaxrec[serve]'") from e

  from jaxrec.rerank.pipeline import RerankConfig
  from jaxrec.retrieval.bundle import latest_version
  from jaxrec.serve.recommender import ServingConfig
  from jaxrec.serve import compilation_cache
  if args.compilation_cache is None:  # the default: a read-only home only costs the speed-up
    try:
      compilation_cache.enable(compilation_cache.default_dir())
    except UserError as e:
      print(f"warning: no compilation cache: {e}", file=sys.stderr)
  elif args.compilation_cache:
    compilation_cache.enable(args.compilation_cache)
  latest_version(args.export)  # no bundle: say so before starting a server
  if args.candidates < 1:
    raise UserError(f"--candidates must be at least 1, got {args.candidates}.")
  config = ServingConfig(candidates=args.candidates,
                         blocked=tuple(filter(None, args.blocked.split(","))), rerank=RerankConfig(
      mmr_lambda=args.mmr_lambda, freshness_slots=args.freshness_slots,
      explore_slots=args.explore_slots, group_cap=args.genre_cap))
  if not args.feedback_rate > 0:
    raise UserError(f"--feedback-rate must be positive, got {args.feedback_rate}.")
  app = create_app(args.export, config, max_batch=args.max_batch, max_wait_ms=args.max_wait_ms,
                   max_queue=args.max_queue, decision_log=args.decision_log,
                   api_key=resolve_api_key(args.api_key, args.api_key_file),
                   feedback_rate=args.feedback_rate,
                   feedback_burst=int(2 * args.feedback_rate) + 1, state=args.state)
  uvicorn.Server(server_config(app, args.host, args.port)).run()


def main(argv: list[str] | None = None) -> int:
  parser = argparse.ArgumentParser(prog="jaxrec", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  _data_parser(sub)
  _train_parsers(sub)
  _simulation_parsers(sub)
  argv = sys.argv[1:] if argv is None else argv
  try:
    from jaxrec.config import split_overrides
    argv, overrides = split_overrides(argv)
    args = parser.parse_args(argv)
    if overrides and args.command not in ("train", "eval"):
      raise UserError(f"--config.* overrides apply to `jaxrec train` (and --config.eval.* to "
                      f"`jaxrec eval`) only, got {overrides}.")
    if args.command == "data":
      _run_data(args)
    elif args.command == "train":
      _run_train(args, overrides)
    elif args.command == "eval":
      _run_eval(args, overrides)
    elif args.command == "export":
      _run_export(args)
    elif args.command == "serve":
      _run_serve(args)
    elif args.command == "simulate":
      _run_simulate(args)
    elif args.command == "ope":
      _run_ope(args)
  except UserError as e:
    print(f"jaxrec: error: {e}", file=sys.stderr)
    return 2
  return 0


if __name__ == "__main__":
  sys.exit(main())
