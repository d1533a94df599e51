"""Where a model's nothing-excluded points go: on validation (or test), how many of its
unfiltered top-10 slots hold items the user already rated (by how recently they were read), and
how many rated items rank above the held-out one, per history length. On MovieLens nobody rates
a movie twice, so with nothing excluded every rated item above the answer costs NDCG.

    .venv/bin/python benchmarks/peer/seen_in_top10.py --jaxrec-workdir W
    .peer-venv/bin/python benchmarks/peer/seen_in_top10.py --recbole-run data/peer/runs/KEY

The jaxrec side reads a training workdir's best checkpoint; the RecBole side a peer run
directory's best_nothing_excluded.pt (recbole_runner.py), in the peer venv: only a run trained
since its inputs share the targets' item numbering (recbole_files.dataset_config) means
anything. Each prints its summary and writes it to --out (JSON) when given.

`--split test` scores the test item (its input holds the validation item); `--drop-newest` takes
the newest item out of every input, so the model predicts two steps ahead: how much of a score
comes from reading the item just before the answer.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

BUCKETS = ((0, 25), (25, 50), (50, 100), (100, 200), (200, 10**9))
RECENCY = ((0, 1), (1, 5), (5, 20), (20, 50), (50, 10**9))  # positions back from the last read


def ndcg(rank: np.ndarray) -> np.ndarray:
  return np.where(rank < 10, 1 / np.log2(rank + 2), 0.0)


def user_row(scores: np.ndarray, target: int, seen: np.ndarray, read: np.ndarray) -> dict:
  """One user's scores [V] (padding already at -inf), held-out item, every rated item and the
  model's input (oldest first) -> ranks with nothing and with history excluded, and for each
  top-10 slot the position back in the input of its item (-1: not read; -2: not rated)."""
  above = scores > scores[target]
  rank_all = int(above.sum())
  rank_unseen = rank_all - int(above[np.unique(seen)].sum())
  back = {int(item): len(read) - 1 - i for i, item in enumerate(read)}
  rated = set(seen.tolist())
  top = np.argpartition(-scores, 10)[:10]
  slots = [back.get(int(i), -1) if int(i) in rated else -2 for i in top]
  return {"history": len(seen), "rank": rank_all, "rank_history_excluded": rank_unseen,
          "slots": slots}


def summarise(rows: list[dict]) -> dict:
  history = np.array([r["history"] for r in rows])
  rank = np.array([r["rank"] for r in rows])
  unseen = np.array([r["rank_history_excluded"] for r in rows])
  slots = np.concatenate([r["slots"] for r in rows])
  out = {"users": len(rows), "ndcg@10_nothing_excluded": float(ndcg(rank).mean()),
         "ndcg@10_history_excluded": float(ndcg(unseen).mean()),
         "top10_rated_read": float((slots >= 0).mean()),
         "top10_rated_not_read": float((slots == -1).mean()),
         "top10_read_by_position_back": {f"{lo}-{hi - 1}" if hi < 10**9 else f"{lo}+":
                                         float(((slots >= lo) & (slots < hi)).mean())
                                         for lo, hi in RECENCY},
         "by_history_length": {}}
  for lo, hi in BUCKETS:
    m = (history >= lo) & (history < hi)
    out["by_history_length"][f"{lo}-{hi - 1}" if hi < 10**9 else f"{lo}+"] = {
        "users": int(m.sum()), "ndcg@10_nothing_excluded": float(ndcg(rank[m]).mean()),
        "ndcg@10_history_excluded": float(ndcg(unseen[m]).mean()),
        "median_rated_above_answer": float(np.median(rank[m] - unseen[m]))}
  return out


def without_newest(inputs: np.ndarray) -> np.ndarray:
  """Left-padded inputs [B, L] with each row's newest (last) item removed."""
  return np.concatenate([np.zeros_like(inputs[:, :1]), inputs[:, :-1]], axis=1)


def jaxrec_rows(workdir: str, split: str, drop_newest: bool) -> list[dict]:
  sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(
      __file__)))))
  from jaxrec.train.restore import restore_model
  trained = restore_model(workdir)
  model, task = trained.model(), trained.task
  items = task.eval_shared(model)
  rows = []
  for batch in task.eval_batches(split):
    if drop_newest:
      batch = dict(batch, inputs=without_newest(batch["inputs"]))
    scores = np.array(task.scores(model, batch, items))
    scores[:, :2] = -np.inf  # padding and OOV are never recommended
    for r in np.flatnonzero(batch["weight"] > 0):
      read = batch["inputs"][r][batch["inputs"][r] > 0]
      seen = batch["seen"][r][batch["seen"][r] > 0]
      rows.append(user_row(scores[r], int(batch["targets"][r][0]), seen, read))
  return rows


def recbole_rows(run: str, split: str, drop_newest: bool) -> list[dict]:
  import torch
  sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
  import recbole_runner as runner
  run = os.path.abspath(run)
  os.chdir(run)  # RecBole writes its log_tensorboard/ into the working directory
  with open(os.path.join(run, "spec.json")) as f:
    spec = json.load(f)
  spec["dataset_dir"] = os.path.join(run, spec["dataset_dir"])  # absolute stays absolute
  spec["out"] = run  # where RecBole's trainer keeps its checkpoint folder: the run's own
  torch.set_num_threads(int(os.environ.get("PEER_THREADS", "1")))
  _, dataset, _, valid_data, test_data, model, _ = runner.build(spec)
  data = valid_data if split == "valid" else test_data
  with open(os.path.join(spec["dataset_dir"], "expected.json")) as f:
    histories = runner.history_index(dataset, json.load(f), split)
  model.load_state_dict(torch.load(os.path.join(run, "best_nothing_excluded.pt"),
                                   map_location="cpu", weights_only=True))
  model.eval()
  runner.patch_collate(data, histories)("nothing_excluded")
  rows = []
  with torch.no_grad():
    for interaction, _, _, _ in data:
      if drop_newest:  # right-padded: the newest item sits at length - 1
        length = interaction[model.ITEM_SEQ_LEN]
        seq = interaction[model.ITEM_SEQ].clone()
        seq[torch.arange(len(length)), length - 1] = 0
        interaction.interaction[model.ITEM_SEQ] = seq
        interaction.interaction[model.ITEM_SEQ_LEN] = torch.clamp(length - 1, min=1)
      scores = model.full_sort_predict(interaction).view(len(interaction), -1).numpy().copy()
      scores[:, 0] = -np.inf
      for r in range(len(interaction)):
        length = int(interaction[model.ITEM_SEQ_LEN][r])
        read = interaction[model.ITEM_SEQ][r][:length].numpy()
        seen = histories[int(interaction[dataset.uid_field][r])].numpy()
        rows.append(user_row(scores[r], int(interaction[dataset.iid_field][r]), seen, read))
  return rows


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  source = parser.add_mutually_exclusive_group(required=True)
  source.add_argument("--jaxrec-workdir")
  source.add_argument("--recbole-run")
  parser.add_argument("--split", choices=("valid", "test"), default="valid")
  parser.add_argument("--drop-newest", action="store_true",
                      help="take the newest item out of every input (predict two steps ahead)")
  parser.add_argument("--out", help="write the summary here (JSON)")
  args = parser.parse_args()
  if args.jaxrec_workdir:
    rows = jaxrec_rows(args.jaxrec_workdir, args.split, args.drop_newest)
  else:
    rows = recbole_rows(args.recbole_run, args.split, args.drop_newest)
  summary = summarise(rows)
  print(json.dumps(summary, indent=1))
  if args.out:
    with open(args.out, "w") as f:
      json.dump(summary, f, indent=1)


if __name__ == "__main__":
  main()
