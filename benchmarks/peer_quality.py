"""jaxrec beside RecBole 1.2.1 on jaxrec's own MovieLens-100K split, under both full-ranking
protocols, in one run.

    python benchmarks/peer_quality.py
        [--models sasrec,sasrec@jaxrec,sasrec@b256,gru4rec,bert4rec,bpr,foundation]
        [--seeds 3] [--max-epochs 300] [--sides jaxrec,recbole] [--peer-python PYTHON]
        [--cached-only] [--prepare-only] [--keep-unfinished]

The peer gets its own venv (.peer-venv at the repository root, built on first use: RecBole
1.2.1 + CPU PyTorch; see benchmarks/peer/peer_env.py); jaxrec does not depend on it. The split is
written as RecBole atomic files (benchmarks/peer/recbole_files.py, under data/peer/,
git-ignored) with benchmark_filename, so RecBole's validation and test targets, its catalogue
and every history are jaxrec's; the runner checks that on RecBole's loaded datasets and refuses
to train otherwise, and this script checks the files against jaxrec's own evaluation batches.
Timestamps are not normalised (normalize_all False).

Protocols, named on every row: "history excluded" (each user's earlier items cannot be
recommended: jaxrec's default; RecBole's for BPR; for RecBole's sequential models obtained by
patching its full-sort collate to hand `_full_sort_batch_eval` the history, as its general-model
path does) and "nothing excluded" (RecBole's sequential protocol: only padding masked). A RecBole
run trains once per seed; each protocol's best epoch is chosen on its own validation NDCG@10 and
scored on test (benchmarks/peer/recbole_runner.py). jaxrec trains once per seed and protocol with
that protocol's recipe (JAXREC_RECIPES: with history excluded, watched items are left out of the
training softmax too), its best checkpoint chosen on that protocol's validation NDCG@10. The
foundation model has no RecBole counterpart: its rows are jaxrec's only, beside SASRec's.

Recipes: RecBole's defaults for each model (its model yaml and overall.yaml: batch 2048, Adam
1e-3, early stopping after 10 evaluations without improvement, at most --max-epochs epochs;
sequential models with CE loss and no negative sampling), and "sasrec@jaxrec": RecBole SASRec
with jaxrec's input length and dropout (configs/movielens_sasrec.py via
jaxrec/train/defaults.py), to separate implementation from settings, and "sasrec@b256": RecBole
SASRec at batch 256 instead of its default 2048 (8x the steps an epoch: the recipe of the run
quoted in issue 22).

Resumable: every run is cached under benchmarks/results/peer_runs/<key>.json, the key a hash of
side, model, recipe, seed and split (for jaxrec, of its whole resolved config: a new config
field re-keys every run). A rerun trains only what is missing of --models and --sides; the table
and the JSON show every cached run of every model. A RecBole run stopped by --max-epochs (or
killed) resumes from its last epoch (checkpoints under data/peer/runs/<key>/) when run again with
a larger --max-epochs; `--keep-unfinished` packs those checkpoints into
benchmarks/results/peer_runs/unfinished/<key>.tgz to commit, for a run longer than the machine
it started on lives: the next machine's run resumes from them (the file goes once it finishes).
A row is "complete" when every seed stopped by early stopping. RecBole SASRec took ~340 s an
epoch with one thread here (255 CPU-s; early stopping after 51 epochs, ~4.8 h; ~180 s an epoch
with two threads on a quiet machine), GRU4Rec ~80-105 s. On a lent
GPU machine: `--prepare-only` writes each missing run's directory (data/peer/runs/<key>/
spec.json, its dataset named relative to it) and benchmarks/peer/on_device.sh trains them all
at once there and brings them back (its comments say how); any machine with recbole==1.2.1 can
run `recbole_runner.py --spec spec.json --out .` in a run directory the same way (torch with
CUDA is used when it sees a GPU; NumPy 2 works, pandas must be < 3): a finished run is taken as
it is, an unfinished one resumes here. On an H200 with 14 runs at once (2026-12-04) SASRec took
~22 s an epoch. Writes benchmarks/results/peer_quality.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tarfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "peer")]
from common import ROOT, print_table, write_result  # noqa: E402
from recbole_files import Sequences, dataset_config, write_atomic  # noqa: E402

RUNS = os.path.join(HERE, "results", "peer_runs")
PEER_DATA = os.path.join(ROOT, "data", "peer")
RUNNER = os.path.join(HERE, "peer", "recbole_runner.py")
# Unfinished RecBole runs' checkpoints, kept in the repository (--keep-unfinished): data/peer/ is
# scratch that a 2-core machine loses before a 4-hour SASRec run ends; the next one resumes.
UNFINISHED = os.path.join(RUNS, "unfinished")
STATE = ("progress.json", "last.pt", "best_history_excluded.pt", "best_nothing_excluded.pt")
PROTOCOLS = {"history_excluded": "full ranking, history excluded",
             "nothing_excluded": "full ranking, nothing excluded"}
MODELS = ("sasrec", "sasrec@jaxrec", "sasrec@b256", "gru4rec", "bert4rec", "bpr", "foundation")
# RecBole recipes other than its defaults, by the name after "@".
VARIANTS = {"sasrec@jaxrec": "jaxrec's input length/dropout",
            "sasrec@b256": "RecBole default but batch 256 (issue 22's run)"}
KEYS = ("ndcg@10", "recall@10", "mrr@10")
# RecBole's name and kind for each model; its default recipe plus what CE training needs.
RECBOLE = {"sasrec": ("SASRec", "sequential"), "gru4rec": ("GRU4Rec", "sequential"),
           "bert4rec": ("BERT4Rec", "sequential"), "bpr": ("BPR", "general")}


def recbole_recipe(model: str) -> tuple[str, str, int, dict]:
  """(RecBole model, data kind, input length, config overrides) of `model`'s peer run."""
  base = model.split("@")[0]
  name, kind = RECBOLE[base]
  overrides = {"train_neg_sample_args": None} if kind == "sequential" else {}
  max_len = 50  # RecBole's MAX_ITEM_LIST_LENGTH
  if model == "sasrec@jaxrec":
    from jaxrec.train.defaults import sequential_config
    jax_model = sequential_config().model
    max_len = int(jax_model.max_len)
    overrides.update(MAX_ITEM_LIST_LENGTH=max_len, hidden_dropout_prob=float(jax_model.dropout),
                     attn_dropout_prob=float(jax_model.dropout))
  if model == "sasrec@b256":
    overrides["train_batch_size"] = 256
  return name, kind, max_len, overrides


def digest(obj) -> str:
  return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def load_sequences(data_dir: str) -> tuple[Sequences, str]:
  """jaxrec's prepared dataset as per-user item sequences and split boundaries; and a hash of
  exactly that split."""
  from jaxrec.data.storage import PreparedDataset
  from jaxrec.data.vocab import FIRST_ID
  ds = PreparedDataset(data_dir)
  users = np.arange(ds.num_users) + FIRST_ID
  tokens = ds.user_tokens(users)
  s = ds.splits
  seqs = Sequences(users=[int(u) for u in users], items=[t["item"] for t in tokens],
                   times=[t["timestamp"] for t in tokens], train_end=s.train_end,
                   valid_end=s.valid_end)
  h = hashlib.sha256()
  for a in (s.train_end, s.valid_end, *seqs.items):
    h.update(np.ascontiguousarray(a, np.int64).tobytes())
  return seqs, h.hexdigest()[:16]


def check_against_jaxrec(data_dir: str, expected: dict) -> dict:
  """The written targets and histories are those of jaxrec's own evaluation batches."""
  from jaxrec.data import pipelines
  from jaxrec.data.storage import PreparedDataset
  ds = PreparedDataset(data_dir)
  out = {}
  for split in ("valid", "test"):
    want = {(u, i): set(h) for u, i, h in zip(expected[split]["user"], expected[split]["item"],
                                              expected[split]["history"])}
    got = {}
    for batch in pipelines.sequence_dataset(ds, split, max_len=50, with_seen=True):
      for row in np.flatnonzero(batch["weight"] > 0):
        seen = set(int(i) for i in batch["seen"][row] if i)
        got[(int(batch["user"][row]), int(batch["targets"][row, 0]))] = seen
    if got != want:
      raise SystemExit(f"the atomic files' {split} targets/histories are not jaxrec's")
    out[f"{split}_rows_checked"] = len(got)
  return out


def prepare_peer_data(seqs: Sequences, split_hash: str, kind: str, max_len: int) -> str:
  folder = os.path.join(PEER_DATA, split_hash, f"ml100k-{kind}-L{max_len}")
  if not os.path.exists(os.path.join(folder, "expected.json")):
    write_atomic(os.path.dirname(folder), os.path.basename(folder), seqs, kind, max_len)
  return folder


def recbole_key(model: str, seed: int, split_hash: str) -> str:
  """The cache key (and run directory name) of `model`'s RecBole run for `seed` on the split."""
  name, kind, max_len, overrides = recbole_recipe(model)
  # The runner adds dataset_config(kind) (sequential runs before it read garbled item ids).
  return digest({"side": "recbole", "model": name, "recipe": overrides, "max_len": max_len,
                 "seed": seed, "split": split_hash, "recbole": "1.2.1", **dataset_config(kind)})


def recbole_cache(model: str, seed: int, key: str) -> str:
  return os.path.join(RUNS, f"recbole-{model.replace('@', '-')}-s{seed}-{key}.json")


def unfinished_archive(key: str) -> str:
  return os.path.join(UNFINISHED, f"{key}.tgz")


def run_recbole(model: str, seed: int, max_epochs: int, seqs: Sequences, split_hash: str,
                python: str | None, mode: str = "train") -> dict | None:
  """One RecBole training run (cached), its result.json as a dict. Modes other than "train" train
  nothing: "cached" returns what the cache holds (None when nothing), "prepare" writes the run's
  directory (spec.json, dataset, the checkpoints of a kept unfinished run) to train elsewhere."""
  name, kind, max_len, overrides = recbole_recipe(model)
  key = recbole_key(model, seed, split_hash)
  cache = recbole_cache(model, seed, key)
  if os.path.exists(cache):
    with open(cache) as f:
      cached = json.load(f)
    if finished(cached, max_epochs) or mode == "cached":
      return cached
  out = os.path.join(PEER_DATA, "runs", key)
  result = finished_run(out, name, seed, overrides, max_epochs)
  if result is None:
    if mode == "cached":
      return None
    write_spec(out, name, seed, max_epochs, overrides,
               prepare_peer_data(seqs, split_hash, kind, max_len))
    restore_unfinished(out, key)
    if mode == "prepare":
      return None
    print(f"RecBole {model} seed {seed}: training (at most {max_epochs} epochs) in {out}",
          flush=True)
    result = train_recbole(out, python)
  result.update(key=key, side="recbole", name=model, recipe=overrides, max_len=max_len)
  os.makedirs(RUNS, exist_ok=True)
  with open(cache, "w") as f:
    json.dump(result, f, indent=1)
  if result["complete"] and os.path.exists(unfinished_archive(key)):
    os.remove(unfinished_archive(key))
  return result


def keep_unfinished(model: str, seed: int, split_hash: str) -> str | None:
  """Packs the checkpoints of the run's directory into UNFINISHED/<key>.tgz when it has trained
  some epochs but has no complete result, so that another machine resumes it."""
  key = recbole_key(model, seed, split_hash)
  out = os.path.join(PEER_DATA, "runs", key)
  if not os.path.exists(os.path.join(out, "progress.json")):
    return None
  for result in (recbole_cache(model, seed, key), os.path.join(out, "result.json")):
    if os.path.exists(result):  # the cached result, or a finished one not adopted yet
      with open(result) as f:
        if json.load(f)["complete"]:
          return None
  os.makedirs(UNFINISHED, exist_ok=True)
  path = unfinished_archive(key)
  with tarfile.open(path, "w:gz") as tar:
    for name in STATE:
      tar.add(os.path.join(out, name), arcname=name)
  return path


def restore_unfinished(out: str, key: str) -> None:
  """Unpacks UNFINISHED/<key>.tgz into a run directory that has not trained yet."""
  path = unfinished_archive(key)
  if os.path.exists(path) and not os.path.exists(os.path.join(out, "progress.json")):
    with tarfile.open(path) as tar:
      tar.extractall(out, members=[m for m in tar.getmembers() if m.name in STATE],
                     filter="data")
    print(f"{out}: resuming the unfinished run kept in {os.path.relpath(path, ROOT)}",
          flush=True)


def finished_run(out: str, name: str, seed: int, overrides: dict, max_epochs: int) -> dict | None:
  """The runner's result.json in `out` when that run is finished (early-stopped, or trained to
  `max_epochs`) with this very recipe: a run trained elsewhere (on a GPU machine: see the module
  docstring) and copied back is taken as it is."""
  path = os.path.join(out, "result.json")
  if not os.path.exists(path):
    return None
  with open(path) as f:
    result = json.load(f)
  spec = result["spec"]
  same = (spec["model"], spec["seed"], spec["config"]) == (name, seed, overrides)
  return result if same and finished(result, max_epochs) else None


def finished(result: dict, max_epochs: int) -> bool:
  """A RecBole run is done when early stopping ended it or it trained to the `max_epochs` cap."""
  return result["complete"] or result["epochs_trained"] >= max_epochs


def write_spec(out: str, name: str, seed: int, max_epochs: int, overrides: dict,
               dataset: str) -> None:
  os.makedirs(out, exist_ok=True)
  # The dataset path is relative to the run directory (the runner's working directory), so
  # data/peer/ copied to another machine as a whole trains there as it is.
  spec = {"model": name, "dataset_dir": os.path.relpath(dataset, out), "seed": seed,
          "max_epochs": max_epochs, "config": overrides}
  with open(os.path.join(out, "spec.json"), "w") as f:
    json.dump(spec, f)


def train_recbole(out: str, python: str | None) -> dict:
  """Runs (or resumes) the run directory `out` in the peer's interpreter; its result.json."""
  python = python or _peer_python()
  threads = os.environ.get("PEER_THREADS", "1")  # see the runner: one thread on shared cores
  env = {**os.environ, "PEER_THREADS": threads, "OMP_NUM_THREADS": threads,
         "MKL_NUM_THREADS": threads}
  # cwd: RecBole writes its tensorboard folder (log_tensorboard/) into the working directory.
  subprocess.run([python, RUNNER, "--spec", "spec.json", "--out", "."], check=True, env=env,
                 cwd=out)
  with open(os.path.join(out, "result.json")) as f:
    return json.load(f)


def _peer_python() -> str:
  from peer_env import peer_python
  return peer_python()


# jaxrec's recipe per protocol, on top of configs/movielens_<model>.py: each protocol trains and
# selects its checkpoint on its own validation. With history excluded, a next-item softmax leaves
# watched items out too (loss.exclude_watched: what evaluation can never rank is not what the
# query spends capacity pushing down); with nothing excluded it must learn to push them down.
# SASRec's and GRU4Rec's 420 default steps stop with validation still rising (GRU4Rec seed 0:
# best at step 420 under both protocols, 2026-12-04): 840, with early stopping; BERT4Rec's 700
# likewise (seed 0 best at step 700 under both), then 1400 (best at 1400: validation 0.1139,
# history excluded): 2800 with patience 10 (best at 1680: 0.1250). The foundation model (jaxrec
# only: RecBole has no counterpart) gets SASRec's recipe, its bar being 1.05 x SASRec's, and
# reads the gap to the request (seed 0, history excluded: best validation NDCG@10 0.1193
# without, 0.1275 with it; 2026-12-04). With nothing excluded, validation plateaus early and
# noisily (seed 1 stopped at step 350 of 840 with patience 5, its learning rate still at 80% of
# its peak): patience 10, as RecBole's. There the foundation model peaked within 70-140 steps
# at SASRec's 2e-3 (best validation 0.0619, seed 0); at 1e-3 with dropout 0.3 its validation
# rises to a plateau instead (0.0669; 1e-3 alone 0.0646, with dropout 0.4 0.0665; 2026-12-04).
# SASRec, GRU4Rec and the foundation model learn from same-second ratings in a new random order
# each epoch (data.shuffle_ties), chosen on validation (2026-12-05), best at seeds 0-2 against
# without: nothing excluded, SASRec 0.0650 / 0.0694 / 0.0702 against 0.0639 / 0.0628 / 0.0605,
# the foundation model 0.0712 / 0.0679 / 0.0616 against 0.0669 / 0.0676 / 0.0574; history
# excluded, SASRec 0.1373 / 0.1296 / 0.1290 against 0.1252 / 0.1207 / 0.1283, the foundation
# model 0.1401 / 0.1300 / 0.1391 against 0.1275 / 0.1190 / 0.1192, GRU4Rec 0.1277 / 0.1261 /
# 0.1266 against 0.1217 / 0.1246 / 0.1271 (mean 0.1268 against 0.1245); GRU4Rec with nothing
# excluded 0.0687 / 0.0667 / 0.0659 against 0.0679 / 0.0647 / 0.0648. BERT4Rec with history
# excluded leaves the user's other items out of its softmax too (2026-12-05): best validation
# NDCG@10 at seeds 0-2 0.1338 / 0.1403 / 0.1368 against 0.1250 / 0.1299 / 0.1154.
# With nothing excluded SASRec and the foundation model spread a tenth of each label over the
# catalogue (loss.label_smoothing, 2026-12-05): best validation 0.0668 / 0.0693 / 0.0712 against
# 0.0650 / 0.0694 / 0.0702, and 0.0751 / 0.0709 / 0.0661 against 0.0712 / 0.0679 / 0.0616.
JAXREC_RECIPES = {
    "history_excluded": {"sasrec": ["loss.exclude_watched=True", "train.num_steps=840",
                                    "data.shuffle_ties=True"],
                         "gru4rec": ["loss.exclude_watched=True", "train.num_steps=840",
                                     "data.shuffle_ties=True"],
                         "bert4rec": ["loss.exclude_watched=True", "train.num_steps=2800",
                                      "train.patience=10"],
                         "foundation": ["loss.exclude_watched=True", "train.num_steps=840",
                                        "model.request_gap=True", "data.shuffle_ties=True"]},
    "nothing_excluded": {"sasrec": ["eval.exclude_seen=False", "train.num_steps=840",
                                    "train.patience=10", "data.shuffle_ties=True",
                                    "loss.label_smoothing=0.1"],
                         "gru4rec": ["eval.exclude_seen=False", "train.num_steps=840",
                                     "train.patience=10", "data.shuffle_ties=True"],
                         "bert4rec": ["eval.exclude_seen=False", "train.num_steps=2800",
                                      "train.patience=10"],
                         "bpr": ["eval.exclude_seen=False"],
                         "foundation": ["eval.exclude_seen=False", "train.num_steps=840",
                                        "train.patience=10", "model.request_gap=True",
                                        "optimizer.learning_rate=1e-3", "model.dropout=0.3",
                                        "data.shuffle_ties=True", "loss.label_smoothing=0.1"]},
}


# Options added after jaxrec runs were cached: left out of a run's key while off.
KEYLESS_WHEN_OFF = (("data", "shuffle_ties"), ("loss", "label_smoothing"))


def jaxrec_config(model: str, seed: int, data_dir: str, protocol: str):
  from jaxrec.config import apply_overrides, load_config
  config = load_config(os.path.join(ROOT, "configs", f"movielens_{model}.py"))
  recipe = JAXREC_RECIPES[protocol].get(model, [])
  return apply_overrides(config, [f"seed={seed}", f"data.dir={data_dir}", *recipe]), recipe


def jaxrec_key(config, split_hash: str) -> str:
  """A jaxrec run's cache key: its resolved config (but the data folder) and the split. Options
  in KEYLESS_WHEN_OFF are left out while off, so runs cached before they existed keep their key."""
  resolved = json.loads(config.to_json_best_effort())
  resolved.get("data", {}).pop("dir", None)
  for section, name in KEYLESS_WHEN_OFF:
    if not resolved.get(section, {}).get(name, True):
      resolved[section].pop(name)
  return digest({"side": "jaxrec", "config": resolved, "split": split_hash})


def run_jaxrec(model: str, seed: int, data_dir: str, split_hash: str,
               cached_only: bool = False) -> dict | None:
  """jaxrec's runs for one seed (one per protocol, each cached by its resolved config): each
  protocol's row is its own run, its checkpoint chosen on its own validation. With
  `cached_only`, the protocols cached so far (None when none is)."""
  protocols = {}
  for protocol in PROTOCOLS:
    config, recipe = jaxrec_config(model, seed, data_dir, protocol)
    key = jaxrec_key(config, split_hash)
    cache = os.path.join(RUNS, f"jaxrec-{model}-s{seed}-{key}.json")
    if os.path.exists(cache):
      with open(cache) as f:
        protocols[protocol] = json.load(f)
      continue
    if cached_only:
      continue
    from jaxrec.train.trainer import train
    workdir = os.path.join(PEER_DATA, "jaxrec", key)
    print(f"jaxrec {model} seed {seed} ({PROTOCOLS[protocol]}): training in {workdir}",
          flush=True)
    started = time.perf_counter()
    results = train(config, workdir)
    pick = lambda r: {k: float(r[k]) for k in KEYS if k in r}  # noqa: E731
    protocols[protocol] = {
        "key": key, "recipe": recipe, "best_step": results["best_step"],
        "train_seconds": time.perf_counter() - started, "valid": pick(results["valid"]),
        "test": pick(results["test"]), "protocol": results.get("protocol")}
    os.makedirs(RUNS, exist_ok=True)
    with open(cache, "w") as f:
      json.dump(protocols[protocol], f, indent=1)
  if not protocols:
    return None
  return {"key": [p["key"] for p in protocols.values()], "side": "jaxrec", "name": model,
          "seed": seed, "complete": True, "protocols": protocols,
          "train_seconds": sum(p["train_seconds"] for p in protocols.values())}


def summarise(runs: list[dict], protocol: str) -> dict | None:
  """The row of `runs` under `protocol`: over the seeds that have it (a jaxrec run trains each
  protocol apart, so one may be cached without the other); None when none has."""
  runs = [r for r in runs if protocol in r["protocols"]]
  if not runs:
    return None
  tests = [r["protocols"][protocol]["test"] for r in runs]
  return {"seeds": [r["seed"] for r in runs],
          "complete": all(r.get("complete") for r in runs),
          "mean": {k: float(np.mean([t[k] for t in tests])) for k in KEYS},
          "std": {k: float(np.std([t[k] for t in tests])) for k in KEYS},
          "valid_ndcg@10": [r["protocols"][protocol]["valid"]["ndcg@10"] for r in runs],
          "best": [r["protocols"][protocol].get("best_epoch", r["protocols"][protocol].get(
              "best_step")) for r in runs],
          "epochs_trained": [r.get("epochs_trained") for r in runs],
          "seconds_per_epoch": [r.get("seconds_per_epoch") for r in runs],
          "train_seconds": [r.get("train_seconds") for r in runs]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--models", default=",".join(MODELS),
                      help=f"comma-separated, from {', '.join(MODELS)}")
  parser.add_argument("--seeds", type=int, default=3)
  parser.add_argument("--max-epochs", type=int, default=300,
                      help="cap on RecBole epochs (its default recipe: 300, early stopping 10)")
  parser.add_argument("--sides", default="jaxrec,recbole")
  parser.add_argument("--peer-python", default=None,
                      help="an interpreter with recbole==1.2.1 (default: build the peer venv)")
  parser.add_argument("--data", default=os.path.join(ROOT, "data", "movielens-100k"))
  parser.add_argument("--cached-only", action="store_true",
                      help="train nothing: the table of the cached runs (and of finished run "
                           "directories copied into data/peer/runs/)")
  parser.add_argument("--prepare-only", action="store_true",
                      help="train nothing; write the directory of every missing RecBole run "
                           "of --models (data/peer/runs/<key>/) to train elsewhere")
  parser.add_argument("--keep-unfinished", action="store_true",
                      help="train nothing; pack the checkpoints of every unfinished RecBole run "
                           "of --models into benchmarks/results/peer_runs/unfinished/ (commit "
                           "them: the next machine's run of this script resumes from them)")
  args = parser.parse_args()
  models = [m for m in args.models.split(",") if m]
  unknown = set(models) - set(MODELS)
  if unknown:
    raise SystemExit(f"unknown models {sorted(unknown)}: choose from {', '.join(MODELS)}")
  sides = args.sides.split(",")

  seqs, split_hash = load_sequences(args.data)
  folder = prepare_peer_data(seqs, split_hash, "sequential", 50)
  with open(os.path.join(folder, "expected.json")) as f:
    check = check_against_jaxrec(args.data, json.load(f))
  print(f"split {split_hash}: atomic files match jaxrec's evaluation batches {check}",
        flush=True)
  if args.keep_unfinished:
    for model in models:
      for seed in range(args.seeds):
        kept = model.split("@")[0] in RECBOLE and keep_unfinished(model, seed, split_hash)
        if kept:
          print(f"RecBole {model} seed {seed}: kept {os.path.relpath(kept, ROOT)}")
    return

  runs: dict[tuple[str, str], list[dict]] = {}
  missing = []
  # The table and JSON always show every cached run; only `models` x `sides` are trained.
  for model in MODELS:
    for seed in range(args.seeds):
      found = {}
      chosen = {side: model in models and side in sides and not args.cached_only
                for side in ("recbole", "jaxrec")}
      if model.split("@")[0] in RECBOLE:
        mode = "cached" if not chosen["recbole"] else "prepare" if args.prepare_only else "train"
        found["RecBole 1.2.1"] = run_recbole(model, seed, args.max_epochs, seqs, split_hash,
                                             args.peer_python, mode)
      if "@" not in model:
        found["jaxrec"] = run_jaxrec(model, seed, args.data, split_hash,
                                     cached_only=not chosen["jaxrec"] or args.prepare_only)
      for impl, result in found.items():
        absent = [label for protocol, label in PROTOCOLS.items()
                  if result is None or protocol not in result["protocols"]]
        if absent:
          missing.append(f"{impl} {model} seed {seed}" + (
              f" ({', '.join(absent)})" if len(absent) < len(PROTOCOLS) else ""))
        if result is not None:
          runs.setdefault((impl, model), []).append(result)

  rows, summary = [], []
  for protocol, label in PROTOCOLS.items():
    for (impl, model), results in runs.items():
      s = summarise(results, protocol)
      if s is None:
        continue
      recipe = (VARIANTS[model] if "@" in model
                else "RecBole default" if impl.startswith("RecBole")
                else " ".join(["jaxrec config", *JAXREC_RECIPES[protocol].get(model, [])]))
      summary.append({"protocol": label, "implementation": impl, "model": model.split("@")[0],
                      "recipe": recipe, **s})
      status = ("complete" if s["complete"] else
                f"capped at {','.join(str(e) for e in s['epochs_trained'])} epochs (resumable)")
      rows.append([label, impl, model.split("@")[0], recipe, len(s["seeds"]),
                   *(f"{s['mean'][k]:.4f} ± {s['std'][k]:.4f}" for k in KEYS),
                   ",".join(str(b) for b in s["best"]), status])
  print()
  print_table(["protocol", "implementation", "model", "recipe", "seeds",
               *(f"test {k}" for k in KEYS), "best epoch/step", "status"], rows)
  if missing:
    print(f"not run yet: {', '.join(missing)}")
  write_result("peer_quality", {
      "dataset": "MovieLens-100K, jaxrec's leave-one-out by time (data/movielens-100k)",
      "split_hash": split_hash, "split_check": check,
      "selection": "best validation NDCG@10 under the row's protocol, for both sides",
      "jaxrec_recipes": JAXREC_RECIPES,
      "rows": summary, "max_epochs": args.max_epochs, "missing": missing,
      "runs": {f"{impl}/{model}": [r.get("key") for r in results]
               for (impl, model), results in runs.items()}})


if __name__ == "__main__":
  main()
