"""Long context, measured fairly: what 2,048 tokens of history buy over 200, and memory vs length.

    python benchmarks/foundation_long_context.py [--users 1000] [--steps 1000] [--resume]
    python benchmarks/foundation_long_context.py --seed 1 --resume --skip-memory   # a 2nd seed
    python benchmarks/foundation_long_context.py --skip-quality     # the memory table alone

Data: the synthetic-long dataset (jaxrec/data/synthetic_sessions.py), --users users, every one
with >= 2,000 tokens (the shortest is printed), ~24 slowly drifting interests with a favourite
style each, and short sessions, so the last 200 tokens miss part of a user's interests.
Leave-one-out by time; test metrics rank all 7,200 items with each user's earlier items excluded
(the same protocol for every row). Every row trains on the same data in this one run with ~16k
tokens per step, the full softmax over the 7,200 items with each user's watched items left out
(loss.exclude_watched: nobody re-watches here), the long-history configs' objective.

Rows, so that the gain can be attributed:
- SASRec @200 (configs/synthetic_long_sasrec.py), the issue's baseline, trained to convergence:
  evaluated on validation every --eval-every steps and stopped once validation NDCG@10 has not
  risen for --patience evaluations (best checkpoint kept), at each rate of --sasrec-lrs; the rate
  with the best validation NDCG@10 is the row (every rate's run is in the JSON). The default,
  5e-3, is the rate validation chose over 2e-3 at 400 users (0.1018 vs 0.0892); both foundation
  rows run at --foundation-lr, the same 5e-3.
- foundation @2048 (configs/synthetic_long_foundation.py), 8 users per step, trained to
  convergence like SASRec but validated every --long-eval-every steps (an evaluation reads 2,048
  tokens a user), stopping after 2 without a new best, at most --steps steps. 1,024-token
  window + 4 attention-sink tokens, 2 layers: its last position reads the last 1,024 tokens
  directly and 2,047 through the layers; every position of the 2,048 is trained. It reads the
  request time (model.request_gap: in evaluation, the held-out token's gap); SASRec does not.
- foundation @200: the same config with only the context changed (200 tokens, 80 users per step;
  a 1,024-token window covers all 200, so it runs as `model.window=None`: full causal attention
  over the same sink tokens and history, the same function), trained to convergence like
  SASRec. The same model, metadata and event fields as foundation @2048, so the step from this
  row to that one is the context length alone, and the step from SASRec to this row is the
  model (metadata, event fields, id dropout) under the same objective.
The JSON gets each run's validation history, the tokens it trained on until its best checkpoint
(as epochs of the training tokens), the device it ran on, the git sha and the files that
differed from it. It is written after every run, so a stopped benchmark keeps the rows that
finished. --seed N (N > 0) runs every row at config seed N into the JSON's seeds; the table of
each row's NDCG@10 at every stored seed and their mean follows the seed-0 table.

Memory: the compiled train step's memory analysis (XLA's plan: arguments + outputs + scratch
− donated buffers) of the foundation model at 512 / 1,024 / 2,048 / 4,096 tokens, 8 users per
step, with local attention and with full attention, and the ratio to 512.
Writes benchmarks/results/foundation_long_context.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import RESULTS, ROOT, device, print_table, train_config, write_result  # noqa: E402

from jaxrec.train.defaults import long_context_foundation_config  # noqa: E402
from jaxrec.train.step import make_train_step  # noqa: E402
from jaxrec.train.trainer import Run  # noqa: E402

KEYS = ["ndcg@10", "recall@10", "mrr@10", "ndcg@20", "recall@20"]
LENGTHS = (512, 1024, 2048, 4096)
REFERENCE_WINDOWS = (200, 512, 1024, 2048)
NO_STYLE = ", topic + popularity only"  # the reference rows that infer no favourite style
MEMORY_BATCH = 8
BASELINE, CONTROL, LONG = "SASRec @200", "foundation @200 (same config)", "foundation @2048"
RECORDED = ("test", "valid", "seconds", "best_step", "last_step", "valid_ndcg@10_history",
            "overrides", "config", "lr", "batch_size", "max_len", "device")
LONG_PATIENCE = 2  # foundation @2048 stops after 2 validations (200 steps) without a new best
SHORT_BATCH = 80  # 80 x 200 = 16,000 tokens per step; the 2,048-token runs take 8 x 2,048


def data_dir(users: int) -> str:
  return os.path.join(ROOT, "data", f"synthetic-long-{users}")


def planned_runs(args) -> dict[str, tuple[str, list[str]]]:
  """name -> (config file, overrides), in the order they run: the baseline at the default rate
  and the two foundation rows first, the other SASRec rates after (the rate check)."""
  until_converged = [f"train.num_steps={args.max_steps}", f"train.eval_every={args.eval_every}",
                     f"train.patience={args.patience}"]
  sasrec = {f"{BASELINE} lr {lr:g}": ("synthetic_long_sasrec.py",
                                      until_converged + [f"optimizer.learning_rate={lr}"])
            for lr in args.sasrec_lrs}
  first = next(iter(sasrec))
  foundation_lr = [f"optimizer.learning_rate={args.foundation_lr}"]
  runs = {first: sasrec.pop(first),
          # Its evaluations read 2,048 tokens a user, so fewer of them, and a shorter patience.
          LONG: ("synthetic_long_foundation.py",
                 [f"train.num_steps={args.steps}", f"train.eval_every={args.long_eval_every}",
                  f"train.patience={LONG_PATIENCE}"] + foundation_lr),
          CONTROL: ("synthetic_long_foundation.py", until_converged + foundation_lr + [
              "model.max_len=200", f"train.batch_size={SHORT_BATCH}",
              # A 1,024-token window over 200 tokens is full attention; the dense path computes the
              # same thing (over the same sink tokens) with less work.
              "model.window=None"]),
          **sasrec}
  seed = [f"seed={args.seed}"] if args.seed else []  # seed 0 is every config's default
  return {name: (config_file, overrides + seed) for name, (config_file, overrides) in runs.items()}


def data_overrides(users: int) -> list[str]:
  return [f"data.synthetic.num_users={users}", f"data.dir={data_dir(users)}"]


def resolved_config(config_file: str, overrides: list[str], users: int) -> dict:
  """The whole config a run of `config_file` with `overrides` trains with, as its config.json
  records it: what --resume compares, so a changed default reruns the row too."""
  from jaxrec.config import apply_overrides, config_json, load_config
  config = load_config(os.path.join(ROOT, "configs", config_file))
  return json.loads(config_json(apply_overrides(config, data_overrides(users) + overrides)))


def train_row(config_file: str, overrides: list[str], users: int, run_dir: str) -> dict:
  out = train_config(config_file, data_overrides(users) + overrides, run_dir)
  with open(os.path.join(run_dir, "config.json")) as f:
    config = json.load(f)
  out.update(overrides=overrides, config=config, lr=config["optimizer"]["learning_rate"],
             batch_size=config["train"]["batch_size"], max_len=config["model"]["max_len"],
             device=device())
  return out


def summarise(runs: dict[str, dict]) -> dict[str, dict]:
  """The table's rows: SASRec at the rate with the best validation NDCG@10 (never test), then
  the foundation rows that have finished."""
  sasrec = {name: out for name, out in runs.items() if name.startswith(BASELINE)}
  best = max(sasrec, key=lambda name: sasrec[name]["valid"]["ndcg@10"])
  quality = {BASELINE: {**runs[best], "run": best, "chosen_from": {
      name: out["valid"]["ndcg@10"] for name, out in sasrec.items()}}}
  quality.update({name: out for name, out in runs.items() if name not in sasrec})
  return quality


def world_reference(users: int) -> dict[str, dict]:
  """The scorer that knows the world's rules (jaxrec/eval/metrics/long_history_reference.py) reading
  the last 200 and 2,048 tokens: what the context is worth in this world, whatever the model."""
  from jaxrec.data.synthetic_sessions import LongHistoryConfig
  from jaxrec.eval.metrics.long_history_reference import reference_metrics
  dataset, world = prepared_data(users), LongHistoryConfig(num_users=users)
  return {f"@{window}{suffix}": {split: reference_metrics(dataset, world, window, split,
                                                          infer_style=infer_style)
                                 for split in ("valid", "test")}
          for suffix, infer_style in (("", True), (NO_STYLE, False))
          for window in REFERENCE_WINDOWS}


def print_reference(result: dict) -> None:
  reference = result["reference"]
  print("\nthe world's own rules as a scorer (jaxrec/eval/metrics/long_history_reference.py), reading the "
        "last W tokens: an upper reference, not a model\n")
  print_table(["W"] + ["test " + k for k in KEYS] + ["± s.e.", "valid ndcg@10"], [
      [window] + [f"{row['test'][k]:.4f}" for k in KEYS]
      + [f"{row['test']['ndcg@10_stderr']:.4f}", f"{row['valid']['ndcg@10']:.4f}"]
      for window, row in reference.items()])
  short, long = (reference[f"@{w}"] for w in (REFERENCE_WINDOWS[0], REFERENCE_WINDOWS[-1]))
  print("context value in this world (reference @2048 over @200), NDCG@10: test "
        f"{long['test']['ndcg@10'] / short['test']['ndcg@10'] - 1:+.1%}, valid "
        f"{long['valid']['ndcg@10'] / short['valid']['ndcg@10'] - 1:+.1%}; one NDCG@10 over "
        f"{short['test']['num_users']} users has a standard error of about "
        f"{short['test']['ndcg@10_stderr']:.3f}")


def prepared_data(users: int):
  """The synthetic-long data of `users` users, prepared first if no run here has (--resume)."""
  from jaxrec.config import apply_overrides, load_config
  from jaxrec.data.prepare import open_or_prepare
  config = load_config(os.path.join(ROOT, "configs", "synthetic_long_sasrec.py"))
  return open_or_prepare(apply_overrides(config, data_overrides(users)).data)


def training_tokens(users: int) -> tuple[int, int]:
  """(training tokens in the data, the shortest user's history): the epoch of the JSON's
  `epochs`, and the check that every user has >= 2,000 tokens."""
  splits = prepared_data(users).splits
  return int(np.sum(splits.train_end)), int(np.min(splits.length))


def train_step_memory(config) -> dict[str, int]:
  """XLA's memory plan for one compiled train step of `config` (nothing is run)."""
  run = Run(config)
  batch = next(iter(run.task.train_data(0)))
  step = make_train_step(run.graphdef, run.tx, run.task.loss, config.seed, run.task.row_optimizer)
  with jax.set_mesh(run.partitioner.mesh):
    compiled = jax.jit(step, donate_argnums=(0, 1)).lower(
        run.state, run.opt_state, batch, jnp.int32(1)).compile()
  m = compiled.memory_analysis()
  peak = (m.argument_size_in_bytes + m.output_size_in_bytes + m.temp_size_in_bytes
          - m.alias_size_in_bytes)
  return {"peak_bytes": int(peak), "temp_bytes": int(m.temp_size_in_bytes),
          "argument_bytes": int(m.argument_size_in_bytes)}


def memory_runs(users: int) -> dict[str, dict[int, dict]]:
  out = {}
  for label in ("local", "full"):
    out[label] = {}
    for length in LENGTHS:
      config = long_context_foundation_config(length)  # local: its window and sinks as they are
      config.data.synthetic.num_users = users
      config.data.dir = data_dir(users)
      if label == "full":
        config.model.window, config.model.num_global = None, 0
      config.train.batch_size = MEMORY_BATCH
      config.lock()
      out[label][length] = train_step_memory(config)
      print(f"{label} attention @{length}: peak {out[label][length]['peak_bytes'] / 2**20:.0f} MiB",
            flush=True)
  return out


def tokens_trained(out: dict, train_tokens: int) -> dict:
  """Training tokens (positions with a loss) up to the best checkpoint, and as epochs."""
  tokens = out["best_step"] * out["batch_size"] * out["max_len"]
  return {"tokens": tokens, "epochs": tokens / train_tokens}


def print_quality_result(result: dict) -> None:
  models = result["models"]
  print(f"\nsynthetic-long, {result['users']} users (shortest history "
        f"{result['shortest_history']} tokens, {result['training_tokens']:,} training tokens); "
        f"{result['protocol']}\n")
  baseline = models[BASELINE]["test"]["ndcg@10"]
  rows = []
  for name, out in models.items():
    label = f"{name} (lr {out['lr']:g})" if name == BASELINE else name
    rows.append([label] + [f"{out['test'][k]:.4f}" for k in KEYS]
                + [f"{out['valid']['ndcg@10']:.4f}",
                   f"{out['test']['ndcg@10'] / baseline - 1:+.1%}",
                   f"{out['best_step']}/{out['last_step']}", f"{out['epochs']:.2f}",
                   f"{out['seconds']:.0f}", out.get("device") or "?"])
  print_table(["model"] + ["test " + k for k in KEYS]
              + ["valid ndcg@10", "ndcg@10 vs SASRec", "best/last step", "epochs", "seconds",
                 "device"], rows)
  if BASELINE in models and "chosen_from" in models[BASELINE]:
    print("SASRec learning rate chosen on validation NDCG@10: " + ", ".join(
        f"{name.split(' lr ')[1]} -> {value:.4f}"
        for name, value in models[BASELINE]["chosen_from"].items()))
  if "gain_ndcg10" in result:
    print(f"\nbar: foundation @2048 >= +10% NDCG@10 over SASRec @200: "
          f"{result['gain_ndcg10']:+.1%} ({'met' if result['bar_met'] else 'NOT met'})")
  if "gain_from_context_ndcg10" in result:
    print(f"of which the context length (foundation @2048 over the same model @200): "
          f"{result['gain_from_context_ndcg10']:+.1%}")
  if not result.get("complete", True):
    print("(incomplete: not every planned run finished)")


def across_seeds(result: dict) -> dict | None:
  """Each row's test and validation NDCG@10 averaged over the stored seeds that have a finished
  SASRec row (None below 2): one seed's SASRec or foundation run can be a lucky or unlucky draw."""
  seeds = {seed: s for seed, s in {"0": result, **result.get("seeds", {})}.items()
           if BASELINE in s.get("models", {})}
  if len(seeds) < 2:
    return None
  names = [name for name in result["models"] if all(name in s["models"] for s in seeds.values())]
  return {"seeds": list(seeds), "mean_ndcg10": {
      split: {name: float(np.mean([s["models"][name][split]["ndcg@10"] for s in seeds.values()]))
              for name in names} for split in ("test", "valid")}}


def print_across_seeds(result: dict) -> None:
  """The table of each row's NDCG@10 at every seed of result["across_seeds"], and their mean."""
  seeds = {seed: result if seed == "0" else result["seeds"][seed]
           for seed in result["across_seeds"]["seeds"]}
  mean = result["across_seeds"]["mean_ndcg10"]
  print(f"\nNDCG@10 at seeds {', '.join(seeds)} (test / valid) and their mean\n")
  print_table(["model"] + [f"seed {seed}" for seed in seeds] + ["mean", "mean vs SASRec"], [
      [name] + [f"{s['models'][name]['test']['ndcg@10']:.4f} / "
                f"{s['models'][name]['valid']['ndcg@10']:.4f}" for s in seeds.values()]
      + [f"{mean['test'][name]:.4f} / {mean['valid'][name]:.4f}",
         f"{mean['test'][name] / mean['test'][BASELINE] - 1:+.1%} / "
         f"{mean['valid'][name] / mean['valid'][BASELINE] - 1:+.1%}"]
      for name in mean["test"]])
  if LONG in mean["test"] and CONTROL in mean["test"]:
    print(f"context length (foundation @2048 over @200), means: test "
          f"{mean['test'][LONG] / mean['test'][CONTROL] - 1:+.1%}, valid "
          f"{mean['valid'][LONG] / mean['valid'][CONTROL] - 1:+.1%}")


QUALITY_KEYS = ("users", "steps", "long_eval_every", "max_steps", "eval_every", "patience",
                "sasrec_lrs", "foundation_lr", "protocol",
                "shortest_history", "training_tokens", "gain_ndcg10", "gain_from_context_ndcg10",
                "bar_met", "models", "sasrec_runs", "complete", "git_sha", "uncommitted")
# (not "resumed": a resumed run's record of which runs came from which earlier start)


def quality_result(quality: dict, runs: dict, train_tokens: int, shortest: int) -> dict:
  """The JSON's quality keys from the rows that have finished."""
  out = {"protocol": quality[BASELINE]["protocol"], "shortest_history": shortest,
         "training_tokens": train_tokens,
         "models": {name: {**{k: row.get(k) for k in RECORDED},
                           **tokens_trained(row, train_tokens),
                           **({"run": row["run"], "chosen_from": row["chosen_from"]}
                              if name == BASELINE else {})}
                    for name, row in quality.items()},
         "sasrec_runs": {name: {k: row.get(k) for k in RECORDED}
                         for name, row in runs.items() if name.startswith(BASELINE)}}
  ndcg = {name: row["test"]["ndcg@10"] for name, row in quality.items()}
  if LONG in ndcg:
    out["gain_ndcg10"] = ndcg[LONG] / ndcg[BASELINE] - 1
    out["bar_met"] = out["gain_ndcg10"] >= 0.10
  if LONG in ndcg and CONTROL in ndcg:
    out["gain_from_context_ndcg10"] = ndcg[LONG] / ndcg[CONTROL] - 1
  return out


def summarise_into(store: dict, runs: dict, args) -> None:
  """The quality keys of the finished `runs` into `store` (the JSON's top level or a seed's)."""
  store.update(quality_result(summarise(runs), runs, *training_tokens(args.users)),
               complete=len(runs) == len(planned_runs(args)))


def without_data_dir(config: dict) -> dict:
  """A run's config less where its data was cached (a clone's checkout has another), which
  changes nothing it trains on: data.synthetic holds the generator's settings."""
  return {**config, "data": {k: v for k, v in config.get("data", {}).items() if k != "dir"}}


def same_run(earlier: dict, planned: dict) -> bool:
  """Whether a run made with config `earlier` is the run `planned` would make: equal up to where
  the data was cached and the options added since (at their planned values)."""
  planned = without_data_dir(planned)
  return with_added_options(without_data_dir(earlier), planned) == planned


def with_added_options(earlier: dict, planned: dict) -> dict:
  """An earlier run's config with the options added to the config since it ran, at their planned
  values: a new option defaults to the behaviour before it (so that run is still the planned
  one), while every option the earlier run had must still match."""
  out = dict(earlier)
  for key, value in planned.items():
    if key not in earlier:
      out[key] = value
    elif isinstance(value, dict) and isinstance(earlier[key], dict):
      out[key] = with_added_options(earlier[key], value)
  return out


def finished_runs(result: dict, args) -> dict[str, dict]:
  """--resume: the runs the last results JSON holds that were made on the same users with the
  whole config planned now, up to options added since (a run whose settings or config defaults
  changed runs again)."""
  if result.get("users") != args.users:
    print("--resume: the last results were made on other users; running everything")
    return {}
  planned = planned_runs(args)
  protocol = {"protocol": result["protocol"]}
  earlier = {**result.get("sasrec_runs", {}),
             **{name: row for name, row in result.get("models", {}).items() if name != BASELINE}}
  runs = {name: {**row, **protocol} for name, row in earlier.items()
          if name in planned
          and same_run(row.get("config") or {}, resolved_config(*planned[name], args.users))}
  result.setdefault("resumed", []).append({"git_sha": result.get("git_sha"),
                                           "uncommitted": result.get("uncommitted"),
                                           "runs": sorted(runs)})
  return runs


def git_sha() -> str:
  return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True,
                        text=True).stdout.strip()


def uncommitted() -> list[str]:
  """Files that differ from git_sha when the run starts (the working tree is shared)."""
  status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                          capture_output=True, text=True).stdout
  return sorted(line[3:] for line in status.splitlines())


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--users", type=int, default=1000,
                      help="users (all train; each has a test token): at 400 one NDCG@10 has a "
                           "standard error of ~0.014, more than the bar's 10%% of ~0.08")
  parser.add_argument("--steps", type=int, default=1000,
                      help="at most this many steps for foundation @2048")
  parser.add_argument("--long-eval-every", type=int, default=100,
                      help="validation interval of foundation @2048")
  parser.add_argument("--max-steps", type=int, default=1500,
                      help="at most this many steps for the runs trained to convergence")
  parser.add_argument("--eval-every", type=int, default=50)
  parser.add_argument("--patience", type=int, default=3)
  parser.add_argument("--sasrec-lrs", type=lambda s: [float(x) for x in s.split(",")],
                      default=[5e-3])
  parser.add_argument("--foundation-lr", type=float, default=5e-3,
                      help="learning rate of both foundation rows")
  parser.add_argument("--seed", type=int, default=0,
                      help="every row's config seed; a seed other than 0 is stored under the "
                           "JSON's seeds, and the mean over the stored seeds is printed")
  parser.add_argument("--resume", action="store_true",
                      help="keep the runs the last results JSON finished (same settings)")
  parser.add_argument("--skip-quality", action="store_true",
                      help="memory table only; the quality rows of the last results JSON are kept")
  parser.add_argument("--skip-memory", action="store_true",
                      help="quality only; the memory table of the last results JSON is kept")
  args = parser.parse_args()

  path = os.path.join(RESULTS, "foundation_long_context.json")
  result = {}
  if os.path.exists(path):  # the part not measured now (--skip-*) is kept from the last run
    with open(path) as f:
      result = json.load(f)
  if not args.skip_quality:
    # Seed 0 is the JSON's top level (the README's table), another seed one entry of its seeds.
    store = result if args.seed == 0 else result.setdefault("seeds", {}).setdefault(
        str(args.seed), {})
    runs = finished_runs(store, args) if args.resume else {}
    if not args.resume:
      store.pop("resumed", None)
    for stale in QUALITY_KEYS:
      store.pop(stale, None)
    store.update(users=args.users, steps=args.steps, long_eval_every=args.long_eval_every,
                  max_steps=args.max_steps,
                  eval_every=args.eval_every, patience=args.patience,
                  sasrec_lrs=args.sasrec_lrs, foundation_lr=args.foundation_lr,
                  git_sha=git_sha(), uncommitted=uncommitted())
    with tempfile.TemporaryDirectory() as tmp:
      for name, (config_file, overrides) in planned_runs(args).items():
        if name in runs:
          print(f"{name}: kept from the last run (--resume)", flush=True)
          continue
        out = runs[name] = train_row(config_file, overrides, args.users,
                                     os.path.join(tmp, str(len(runs))))
        print(f"{name}: valid ndcg@10 {out['valid']['ndcg@10']:.4f}, test "
              f"{out['test']['ndcg@10']:.4f} ({out['seconds']:.0f} s, best step "
              f"{out['best_step']} of {out['last_step']})", flush=True)
        # Written after every run, so a stopped benchmark keeps what finished.
        summarise_into(store, runs, args)
        write_result("foundation_long_context", result)
    if runs and "models" not in store:  # every run kept (--resume): summarised all the same
      summarise_into(store, runs, args)
  if "models" in result:  # measured now, or kept from the last run with --skip-quality
    result["reference"] = world_reference(result["users"])  # the models' users, whatever --users
    result["across_seeds"] = across_seeds(result)
    write_result("foundation_long_context", result)
    print_quality_result(result)
    if result["across_seeds"]:
      print_across_seeds(result)
    print_reference(result)

  if args.skip_memory:
    memory = {label: {int(k): v for k, v in rows.items()}
              for label, rows in result["memory"].items()}
  else:
    memory = memory_runs(args.users)
    result.pop("memory_note", None)  # an earlier run's caveat about a reused table
    result.update(memory_users=args.users, memory_batch=MEMORY_BATCH, memory_git_sha=git_sha(),
                  memory={label: {str(k): v for k, v in rows.items()}
                          for label, rows in memory.items()})

  print(f"\npeak training memory (compiled train step, {MEMORY_BATCH} users per step)\n")
  rows = []
  for length in LENGTHS:
    local, full = memory["local"][length], memory["full"][length]
    rows.append([length, f"{local['peak_bytes'] / 2**20:.0f}",
                 f"{local['peak_bytes'] / memory['local'][512]['peak_bytes']:.2f}",
                 f"{full['peak_bytes'] / 2**20:.0f}",
                 f"{full['peak_bytes'] / memory['full'][512]['peak_bytes']:.2f}",
                 f"{length / 512:.0f}"])
  print_table(["context", "local MiB", "local ×512", "full MiB", "full ×512", "length ×512"],
              rows)
  base = memory["local"][512]["peak_bytes"]
  linear = all(memory["local"][n]["peak_bytes"] <= 1.05 * n / 512 * base for n in LENGTHS)
  print(f"\nbar: local-attention memory grows at most linearly: {'met' if linear else 'NOT met'}")
  result["memory_linear"] = linear
  path = write_result("foundation_long_context", result)
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
