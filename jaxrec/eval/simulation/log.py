"""A simulation's decision log (`jaxrec simulate --log`): written from days.run's decision columns,
read back for off-policy evaluation (jaxrec/eval/offpolicy/evaluation.py).

Decision log (`--log`), a directory:
  log.json        {"format": "jaxrec-simulation-log", "version": 1, "synthetic": SyntheticConfig
                   fields, "world": WorldConfig fields, "users", "seed", "days", "k", "policy"}
  decisions.npz   one row per shown item (day, user, slot), all the same length:
                    day        int32   1-based simulated day
                    user       int64   raw user id (the dataset's)
                    slot       int32   0-based position in the slate
                    item       int64   raw item id (the dataset's)
                    propensity float64 probability the logging policy put this item in this slot
                                       given the items above it (1: deterministic)
                    now        int64   unix seconds of the visit
                    click, like, skip, abandoned  bool;  watch float32 (fraction watched)
"""

from __future__ import annotations

import dataclasses
import json
import os

import numpy as np

from jaxrec.data.synthetic import SyntheticConfig
from jaxrec.errors import UserError
from jaxrec.eval.simulation.world import World, WorldConfig, WorldState

LOG_FORMAT = "jaxrec-simulation-log"
RESPONSES = ("click", "watch", "like", "skip", "abandoned")


def write_log(out: str, world: World, decisions: dict, *, days: int, k: int, seed: int,
              policy: str) -> None:
  os.makedirs(out, exist_ok=True)
  np.savez(os.path.join(out, "decisions.npz"), **decisions)
  with open(os.path.join(out, "log.json"), "w") as f:
    json.dump({"format": LOG_FORMAT, "version": 1, **world_description(world), "seed": seed,
               "days": days, "k": k, "policy": policy}, f, indent=2)


def world_description(world: World) -> dict:
  return {"synthetic": dataclasses.asdict(world.synthetic),
          "world": dataclasses.asdict(world.config), "users": world.num_users,
          "world_seed": world.seed}


def read_log(path: str) -> tuple[dict, dict]:
  """(log.json, decision columns) of a log written by write_log; UserError when it is not one."""
  meta_path = os.path.join(path, "log.json")
  if not os.path.isdir(path):
    raise UserError(f"--logs {path} is not a directory; write one with `jaxrec simulate ... "
                    "--log --out DIR`.")
  if not os.path.exists(meta_path):
    raise UserError(f"{path} has no log.json: it is not a simulation log. Write one with "
                    "`jaxrec simulate ... --log --out DIR`.")
  with open(meta_path) as f:
    meta = json.load(f)
  if meta.get("format") != LOG_FORMAT or meta.get("version") != 1:
    raise UserError(f"{meta_path} is not a version-1 {LOG_FORMAT}; write the log again.")
  try:
    with np.load(os.path.join(path, "decisions.npz")) as data:
      columns = {name: data[name] for name in data.files}
  except (OSError, ValueError) as e:
    raise UserError(f"{path}/decisions.npz cannot be read ({e}); write the log again.") from e
  missing = {"day", "user", "slot", "item", "propensity", "now", *RESPONSES} - set(columns)
  if missing:
    raise UserError(f"{path}/decisions.npz lacks columns {sorted(missing)}; write the log again.")
  return meta, columns


def world_of_log(meta: dict) -> World:
  return World(SyntheticConfig(**meta["synthetic"]), WorldConfig(**meta["world"]),
               users=meta["users"], seed=meta["world_seed"])


def replay_state(world: World, columns: dict, day: int) -> WorldState:
  """The world's state before the logged `day` as far as policies see it: the users' clicks on
  earlier days (policies read histories, not the world's hidden fatigue or satisfaction)."""
  state = world.reset()
  state.day = day - 1
  earlier = (columns["day"] < day) & columns["click"]
  for d in np.unique(columns["day"][earlier]):
    rows = earlier & (columns["day"] == d)
    state.clicks.append((columns["user"][rows], world.rank_of_id[columns["item"][rows]],
                         columns["now"][rows]))
  return state
