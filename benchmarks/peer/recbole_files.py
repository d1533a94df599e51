"""jaxrec's split written as RecBole atomic files, so a peer trains and is scored on exactly our
targets.

Pure Python + NumPy (no jaxrec, no torch): the benchmark calls it with jaxrec's prepared data, the
peer's runner reads `expected.json` inside its own venv, and the test calls it without either.

RecBole's `benchmark_filename` loads pre-split `{name}.train.inter`, `.valid.inter`, `.test.inter`
and, for sequential models, does no augmentation of its own: each row must already be one
(history, target) example. So the sequential files hold every training prefix (the item list is
the at most `max_len` items before the target, as RecBole's own augmentation would build them),
one validation row per user (history = its training tokens) and one test row (history = training
and validation tokens). The general-model files (BPR) hold plain (user, item) pairs. Timestamps
are written as they are; the runner turns RecBole's normalisation off.
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

SPLITS = ("train", "valid", "test")


@dataclasses.dataclass
class Sequences:
  """Each user's time-ordered items and jaxrec's split boundaries into them (Splits semantics:
  train on items[:train_end], validate on items[train_end:valid_end], test on items[valid_end:]).
  """
  users: list[int]
  items: list[np.ndarray]
  times: list[np.ndarray]
  train_end: np.ndarray
  valid_end: np.ndarray


def _window(seqs: Sequences, u: int, split: str) -> tuple[int, int]:
  lo = {"valid": seqs.train_end[u], "test": seqs.valid_end[u]}[split]
  hi = {"valid": seqs.valid_end[u], "test": len(seqs.items[u])}[split]
  return int(lo), int(hi)


def expected(seqs: Sequences) -> dict:
  """The targets and histories jaxrec evaluates: per split, one row per held-out token with its
  user, item and every earlier item of that user (what 'history excluded' masks)."""
  out = {"catalogue": sorted({int(i) for items in seqs.items for i in items}),
         "num_train_rows": {"sequential": 0, "general": 0}}
  for u, items in enumerate(seqs.items):
    out["num_train_rows"]["general"] += int(seqs.train_end[u])
    out["num_train_rows"]["sequential"] += max(int(seqs.train_end[u]) - 1, 0)
  for split in ("valid", "test"):
    rows = {"user": [], "item": [], "history": []}
    for u, items in enumerate(seqs.items):
      lo, hi = _window(seqs, u, split)
      for t in range(lo, hi):
        rows["user"].append(int(seqs.users[u]))
        rows["item"].append(int(items[t]))
        rows["history"].append([int(i) for i in items[:t]])
    out[split] = rows
  return out


def _line(*fields) -> str:
  return "\t".join(str(f) for f in fields) + "\n"


def write_atomic(out_dir: str, name: str, seqs: Sequences, kind: str, max_len: int = 50) -> str:
  """Writes `out_dir/name/name.{train,valid,test}.inter` for `kind` "sequential" (prefix rows
  with an `item_id_list` of at most `max_len` items) or "general" (user-item pairs), and
  `expected.json` (see `expected`). Returns the dataset folder."""
  if kind not in ("sequential", "general"):
    raise ValueError(f"kind must be 'sequential' or 'general', got {kind!r}")
  folder = os.path.join(out_dir, name)
  os.makedirs(folder, exist_ok=True)
  if kind == "sequential":
    header = _line("user_id:token", "item_id_list:token_seq", "item_id:token", "timestamp:float")
  else:
    header = _line("user_id:token", "item_id:token", "timestamp:float")
  files = {s: open(os.path.join(folder, f"{name}.{s}.inter"), "w") for s in SPLITS}
  try:
    for f in files.values():
      f.write(header)
    for u, items in enumerate(seqs.items):
      user, times = seqs.users[u], seqs.times[u]
      bounds = {"train": (0, int(seqs.train_end[u])), "valid": _window(seqs, u, "valid"),
                "test": _window(seqs, u, "test")}
      for split, (lo, hi) in bounds.items():
        for t in range(lo, hi):
          if kind == "general":
            files[split].write(_line(user, items[t], times[t]))
          elif t > 0:  # a sequential example needs at least one earlier item
            history = " ".join(str(i) for i in items[max(0, t - max_len):t])
            files[split].write(_line(user, history, items[t], times[t]))
  finally:
    for f in files.values():
      f.close()
  with open(os.path.join(folder, "expected.json"), "w") as f:
    json.dump({**expected(seqs), "kind": kind, "max_len": max_len}, f)
  return folder


def dataset_config(kind: str) -> dict:
  """The RecBole settings files of `kind` need. To RecBole a sequential file's `item_id_list` is
  a field of its own: unaliased, it gets its own id numbering (by first appearance in the lists,
  one item off from `item_id`'s), and the model reads each history item as another item's
  embedding. The alias gives both one numbering, as RecBole's own augmentation does. General
  files have no list (RecBole rejects an alias of an absent field)."""
  return {"alias_of_item_id": ["item_id_list"]} if kind == "sequential" else {}


def read_atomic(path: str) -> list[dict]:
  """Rows of an atomic file as dicts keyed by field name (type suffix dropped)."""
  with open(path) as f:
    names = [h.split(":")[0] for h in f.readline().rstrip("\n").split("\t")]
    return [dict(zip(names, line.rstrip("\n").split("\t"))) for line in f if line.strip()]
