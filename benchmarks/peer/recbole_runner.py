"""Trains one RecBole 1.2.1 model on jaxrec's split and scores it under both full-ranking
protocols in the same run. Runs inside the peer venv (torch + recbole), never imports jaxrec.

    .peer-venv/bin/python benchmarks/peer/recbole_runner.py --spec SPEC.json --out RUN_DIR

SPEC: {"model", "dataset_dir" (written by recbole_files.write_atomic), "seed", "max_epochs",
"config": {RecBole overrides: the recipe}}. RUN_DIR gets result.json (per-epoch training seconds
and validation metrics under each protocol, each protocol's best epoch, its test metrics) and,
while training, last.pt/best_<protocol>.pt so an interrupted or epoch-capped run resumes.

Protocols (jaxrec/eval/protocols.py names them the same way):
- "history excluded": every earlier item of the user masked before ranking. RecBole's
  FullSortEvalDataLoader gives this history only to general models (BPR); for sequential models
  its collate returns None and `_full_sort_batch_eval` masks item 0 only. We patch the collate to
  return (row, item) history indices for every model, as the general path does.
- "nothing excluded": only item 0 (padding) masked: RecBole's own sequential protocol.
Selection: each protocol's best epoch by its own validation NDCG@10 (strictly greater); training
stops, as RecBole's early_stopping does, once more than `stopping_step` evaluations in a row have
not improved, here for both protocols.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import time

import numpy as np
import torch

PROTOCOLS = ("history_excluded", "nothing_excluded")
METRIC = "ndcg@10"


def restore_numpy1_aliases() -> None:
  """RecBole 1.2.1's Config reads np.float_, np.complex_ and np.unicode_, which NumPy 2 removed:
  alias them to the same types again, so the runner also works under NumPy 2 (a lent GPU
  machine's image, whose torch is built against it)."""
  for old, new in (("float_", np.float64), ("complex_", np.complex128), ("unicode_", np.str_)):
    if old not in np.__dict__:
      setattr(np, old, new)


def build(spec: dict):
  restore_numpy1_aliases()
  from recbole.config import Config
  from recbole.data import create_dataset, data_preparation
  from recbole.utils import get_model, get_trainer, init_seed
  from recbole_files import dataset_config
  folder = os.path.abspath(spec["dataset_dir"])
  name = os.path.basename(folder)
  with open(os.path.join(folder, "expected.json")) as f:
    kind = json.load(f)["kind"]
  params = {
      "data_path": os.path.dirname(folder), "benchmark_filename": ["train", "valid", "test"],
      "load_col": None, "normalize_all": False, "normalize_field": None,
      "seed": spec["seed"], "reproducibility": True, "epochs": spec["max_epochs"],
      "use_gpu": torch.cuda.is_available(), "show_progress": False, "state": "WARNING",
      "checkpoint_dir": os.path.join(spec["out"], "recbole_saved"),
      "metrics": ["Recall", "MRR", "NDCG", "Hit"], "topk": [10, 20],
      "valid_metric": "NDCG@10", "metric_decimal_place": 6,
      "eval_args": {"order": "TO", "mode": "full", "group_by": "user", "split": None},
      **dataset_config(kind), **spec.get("config", {})}
  config = Config(model=spec["model"], dataset=name, config_dict=params)
  init_seed(config["seed"], config["reproducibility"])
  dataset = create_dataset(config)
  train_data, valid_data, test_data = data_preparation(config, dataset)
  init_seed(config["seed"], config["reproducibility"])
  model = get_model(config["model"])(config, train_data._dataset).to(config["device"])
  trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
  return config, dataset, train_data, valid_data, test_data, model, trainer


def check_targets(dataset, loaders: dict, expected: dict) -> dict:
  """The peer's validation and test targets are exactly jaxrec's, its catalogue the same items,
  a sequential model's input each target's history (decoded in the targets' item numbering),
  its training rows the files' rows; raises on any difference."""
  uid, iid = dataset.uid_field, dataset.iid_field
  report = {}
  catalogue = sorted(int(t) for t in dataset.field2id_token[iid][1:])
  if catalogue != expected["catalogue"]:
    raise SystemExit(f"catalogue differs: RecBole {len(catalogue)} items, jaxrec "
                     f"{len(expected['catalogue'])}")
  report["catalogue_items"] = len(catalogue)
  for split, loader in loaders.items():
    inter = loader._dataset.inter_feat
    users = dataset.id2token(uid, inter[uid].numpy()).astype(np.int64)
    items = dataset.id2token(iid, inter[iid].numpy()).astype(np.int64)
    got = sorted(zip(users.tolist(), items.tolist()))
    want = sorted(zip(expected[split]["user"], expected[split]["item"]))
    if got != want:
      raise SystemExit(f"{split} targets differ from jaxrec's ({len(got)} vs {len(want)} rows)")
    report[f"{split}_targets"] = len(got)
    if "item_id_list" in inter:  # what a sequential model reads: the last max_len items before
      lists = inter["item_id_list"].numpy()
      lengths = inter[loader._dataset.item_list_length_field].numpy()
      by_target = dict(zip(zip(expected[split]["user"], expected[split]["item"]),
                           expected[split]["history"]))
      for user, item, ids, length in zip(users, items, lists, lengths):
        read = dataset.id2token(iid, ids[:length]).astype(np.int64).tolist()
        if read != by_target[(int(user), int(item))][-len(ids):]:
          raise SystemExit(f"{split}: user {user}'s input reads {read[-3:]} where jaxrec's "
                           "history ends with "
                           f"{by_target[(int(user), int(item))][-3:]} (item numbering differs)")
      report[f"{split}_inputs_checked"] = len(lists)
  return report


def history_index(dataset, expected: dict, split: str) -> dict[int, torch.Tensor]:
  """Internal user id -> internal ids of every item before its held-out token."""
  uid, iid = dataset.uid_field, dataset.iid_field
  out = {}
  for user, history in zip(expected[split]["user"], expected[split]["history"]):
    u = int(dataset.token2id(uid, str(user)))
    ids = dataset.token2id(iid, [str(i) for i in history]) if history else []
    out[u] = torch.as_tensor(np.asarray(ids, np.int64))
  return out


def patch_collate(loader, histories: dict[int, torch.Tensor]):
  """Returns set_protocol(name): makes the loader's collate give RecBole's evaluation the history
  to mask ("history_excluded") or none ("nothing_excluded")."""
  base = type(loader).collate_fn.__get__(loader)
  uid = loader._dataset.uid_field
  own_history = {}

  def with_history(index):
    interaction, recbole_history, positive_u, positive_i = base(index)
    interaction_users = interaction[uid]  # general: one row per user; sequential: per target
    rows = [torch.full_like(histories[int(u)], r) for r, u in enumerate(interaction_users)]
    ours = (torch.cat(rows), torch.cat([histories[int(u)] for u in interaction_users]))
    if recbole_history is not None:  # general models: RecBole's own history must be ours
      own_history["checked"] = own_history.get("checked", 0) + len(interaction_users)
      if sorted(zip(*[t.tolist() for t in recbole_history])) != sorted(
          zip(*[t.tolist() for t in ours])):
        raise SystemExit("RecBole's general-model history differs from jaxrec's")
    return interaction, ours, positive_u, positive_i

  def nothing(index):
    interaction, _, positive_u, positive_i = base(index)
    return interaction, None, positive_u, positive_i

  def set_protocol(name: str):
    # torch's DataLoader iterator reads loader.collate_fn when iteration starts.
    loader.collate_fn = with_history if name == "history_excluded" else nothing
  set_protocol.checked = own_history
  return set_protocol


def evaluate(trainer, loader, set_protocol, protocol: str) -> dict:
  set_protocol(protocol)
  result = trainer.evaluate(loader, load_best_model=False)
  return {k: float(v) for k, v in result.items()}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--spec", required=True)
  parser.add_argument("--out", required=True)
  args = parser.parse_args()
  with open(args.spec) as f:
    spec = json.load(f)
  spec["out"] = os.path.abspath(args.out)
  os.makedirs(args.out, exist_ok=True)
  with open(os.path.join(spec["dataset_dir"], "expected.json")) as f:
    expected = json.load(f)
  # One CPU thread unless PEER_THREADS says otherwise: on 2 cores shared with other work,
  # OpenMP's barriers stall whenever one of its threads is descheduled (GRU forward+backward at
  # batch 256 measured 5.9 s with 2 threads, 0.72 s with 1, at load average 11).
  torch.set_num_threads(int(os.environ.get("PEER_THREADS", "1")))

  config, dataset, train_data, valid_data, test_data, model, trainer = build(spec)
  check = check_targets(dataset, {"valid": valid_data, "test": test_data}, expected)
  check["train_rows"] = len(train_data._dataset)
  want_rows = expected["num_train_rows"]["sequential" if valid_data.is_sequential else "general"]
  if check["train_rows"] != want_rows:
    raise SystemExit(f"train rows {check['train_rows']} != {want_rows}")
  protocols = {"valid": patch_collate(valid_data, history_index(dataset, expected, "valid")),
               "test": patch_collate(test_data, history_index(dataset, expected, "test"))}
  trainer.eval_collector.data_collect(train_data)

  state_path = os.path.join(args.out, "last.pt")
  state = {"epochs": [], "best": {p: {"epoch": None, "valid": None} for p in PROTOCOLS},
           "since_best": {p: 0 for p in PROTOCOLS}, "train_seconds": 0.0}
  if os.path.exists(state_path):
    saved = torch.load(state_path, map_location=config["device"], weights_only=True)
    model.load_state_dict(saved["model"])
    trainer.optimizer.load_state_dict(saved["optimizer"])
    with open(os.path.join(args.out, "progress.json")) as f:
      state = json.load(f)
    print(f"resuming after epoch {len(state['epochs'])}", flush=True)

  stopping = config["stopping_step"]
  stop_reason = "max_epochs"
  for epoch in range(len(state["epochs"]), spec["max_epochs"]):
    if all(state["since_best"][p] > stopping for p in PROTOCOLS):
      stop_reason = "early_stopping"
      break
    started, cpu_started = time.perf_counter(), time.process_time()
    loss = trainer._train_epoch(train_data, epoch)
    seconds = time.perf_counter() - started
    state["train_seconds"] += seconds
    # CPU seconds of the process as well: on a machine shared with other jobs the wall clock
    # also counts the time this process waited for a core; its CPU time does not.
    cpu_seconds = time.process_time() - cpu_started
    started = time.perf_counter()
    row = {"epoch": epoch + 1, "train_s": seconds, "train_s_total": state["train_seconds"],
           "train_cpu_s": cpu_seconds, "load_average": os.getloadavg()[0],
           "loss": float(sum(loss) if isinstance(loss, tuple) else loss)}
    for p in PROTOCOLS:
      row[p] = evaluate(trainer, valid_data, protocols["valid"], p)
      best = state["best"][p]
      if best["valid"] is None or row[p][METRIC] > best["valid"][METRIC]:
        state["best"][p] = {"epoch": epoch + 1, "valid": row[p]}
        state["since_best"][p] = 0
        torch.save(copy.deepcopy(model.state_dict()), os.path.join(args.out, f"best_{p}.pt"))
      else:
        state["since_best"][p] += 1
    row["eval_s"] = time.perf_counter() - started
    state["epochs"].append(row)
    print(json.dumps({"epoch": epoch + 1, "train_s": round(seconds, 1),
                      "train_cpu_s": round(cpu_seconds, 1), "loss": row["loss"],
                      **{p: round(row[p][METRIC], 4) for p in PROTOCOLS}}), flush=True)
    torch.save({"model": model.state_dict(), "optimizer": trainer.optimizer.state_dict()},
               state_path + ".tmp")
    os.replace(state_path + ".tmp", state_path)
    with open(os.path.join(args.out, "progress.json"), "w") as f:
      json.dump(state, f)
  else:
    if all(state["since_best"][p] > stopping for p in PROTOCOLS):
      stop_reason = "early_stopping"

  tests = {}
  for p in PROTOCOLS:
    model.load_state_dict(torch.load(os.path.join(args.out, f"best_{p}.pt"),
                                     map_location=config["device"], weights_only=True))
    tests[p] = evaluate(trainer, test_data, protocols["test"], p)
  check["general_history_rows_checked"] = protocols["valid"].checked.get("checked", 0)
  result = {
      "model": spec["model"], "seed": spec["seed"], "spec": spec, "check": check,
      "stop_reason": stop_reason, "epochs_trained": len(state["epochs"]),
      "complete": stop_reason == "early_stopping",
      "seconds_per_epoch": float(np.mean([e["train_s"] for e in state["epochs"]])),
      "train_seconds": state["train_seconds"], "history": state["epochs"],
      "protocols": {p: {"best_epoch": state["best"][p]["epoch"],
                        "valid": state["best"][p]["valid"], "test": tests[p]}
                    for p in PROTOCOLS},
      "recbole_config": {k: (v if isinstance(v, (int, float, str, bool, type(None), list, dict))
                             else str(v))
                         for k, v in config.final_config_dict.items()
                         if k in ("train_batch_size", "learning_rate", "learner", "epochs",
                                  "stopping_step", "MAX_ITEM_LIST_LENGTH", "hidden_size",
                                  "n_layers", "n_heads", "inner_size", "hidden_dropout_prob",
                                  "attn_dropout_prob", "embedding_size", "num_layers",
                                  "dropout_prob", "loss_type", "mask_ratio",
                                  "train_neg_sample_args", "device", "normalize_all")},
      "torch": torch.__version__, "device": str(config["device"]),
  }
  with open(os.path.join(args.out, "result.json"), "w") as f:
    json.dump(result, f, indent=1)
  print(json.dumps({p: result["protocols"][p]["test"][METRIC] for p in PROTOCOLS}))


if __name__ == "__main__":
  main()
