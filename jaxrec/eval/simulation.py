"""Running a policy in the simulated world for N days: the per-day report, the decision log, the
plot, and the world a policy's bundle was trained for.

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
from jaxrec.eval.simulator import Requests, World, WorldConfig, WorldState

LOG_FORMAT = "jaxrec-simulation-log"
RESPONSES = ("click", "watch", "like", "skip", "abandoned")


def run(world: World, policy, days: int, k: int = 10, seed: int = 0, log: bool = False):
  """Simulates `days` days. Returns (per-day reports, decision columns or None)."""
  if not (isinstance(days, (int, np.integer)) and days >= 1):
    raise UserError(f"days must be a positive integer, got {days!r}")
  if not (isinstance(k, (int, np.integer)) and k >= 1):
    raise UserError(f"k (the slate size) must be a positive integer, got {k!r}")
  rng = np.random.default_rng([seed, 1])
  state = world.reset()
  reports, rows = [], []
  for _ in range(days):
    requests = world.requests(state)
    if len(requests.users):
      slates, propensity = policy.slates(world, state, requests, k, rng)
    else:
      slates, propensity = np.zeros((0, k), np.int64), np.zeros((0, k))
    responses = world.respond(state, requests, slates, rng)
    if log:
      rows.append(_decisions(world, requests, slates, propensity, responses))
    reports.append(world.advance(state, requests, slates, responses, rng))
  decisions = ({name: np.concatenate([r[name] for r in rows]) for name in rows[0]}
               if log else None)
  return reports, decisions


def _decisions(world, requests: Requests, slates, propensity, responses) -> dict:
  u, k = slates.shape
  out = {
      "day": np.full(u * k, requests.day + 1, np.int32),
      "user": np.repeat(requests.users, k).astype(np.int64),
      "slot": np.tile(np.arange(k, dtype=np.int32), u),
      "item": world.item_ids[slates].ravel().astype(np.int64),
      "propensity": np.asarray(propensity, np.float64).ravel(),
      "now": np.repeat(requests.now, k).astype(np.int64),
  }
  for name in RESPONSES:
    out[name] = getattr(responses, name).ravel()
  return out


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


def synthetic_config_of(dataset_dir: str, model_config=None) -> SyntheticConfig:
  """The generator config a prepared dataset was made from: its manifest's `source_config`, or,
  for datasets prepared before that was recorded, the training config's `data.synthetic`."""
  from jaxrec.data.storage import PreparedDataset
  manifest = PreparedDataset(dataset_dir).manifest
  if manifest.get("dataset") != "synthetic":
    raise UserError(f"{dataset_dir} holds the {manifest.get('dataset')!r} dataset: the simulator "
                    "is the synthetic generator's world, so the policy must be trained on a dataset "
                    "prepared with `--dataset synthetic`.")
  if "source_config" in manifest:
    return SyntheticConfig(**manifest["source_config"])
  data = (model_config or {}).get("data", {})
  if data.get("dataset") == "synthetic":
    return SyntheticConfig(**dict(data.get("synthetic") or {}))
  raise UserError(f"{dataset_dir} does not record the synthetic config it was generated with; "
                  "prepare it again with this jaxrec (`jaxrec data prepare --dataset synthetic`).")


def bundle_world_config(path: str) -> tuple[str, SyntheticConfig]:
  """(bundle directory, its dataset's SyntheticConfig) of an export bundle or export root."""
  from jaxrec.retrieval.bundle import latest_version, load_bundle
  if not os.path.isdir(path):
    raise UserError(f"--policy {path} does not exist; pass an export bundle (`jaxrec export "
                    "--workdir TWO_TOWER --ranker DLRM --out DIR`) or its export root.")
  if not os.path.exists(os.path.join(path, "manifest.json")):
    if os.path.exists(os.path.join(path, "config.json")):
      raise UserError(f"--policy {path} is a training workdir; the simulator runs the serving "
                      "pipeline, so export it first: `jaxrec export --workdir TWO_TOWER --ranker "
                      "DLRM --out DIR` and pass DIR.")
    path = latest_version(path)
  bundle = load_bundle(path)
  if not (bundle.ranker_dir and bundle.dataset_dir):
    raise UserError(f"{path} has no ranker and dataset: export it with `jaxrec export --workdir "
                    "TWO_TOWER --ranker DLRM --out DIR`.")
  with open(os.path.join(bundle.query_encoder_dir, "config.json")) as f:
    model_config = json.load(f)
  return path, synthetic_config_of(bundle.dataset_dir, model_config)


def check_same_world(expected: SyntheticConfig, got: SyntheticConfig, what: str) -> None:
  a, b = dataclasses.asdict(expected), dataclasses.asdict(got)
  diff = {k: (a[k], b[k]) for k in a if a[k] != b[k] and k != "chunk_users"}
  if diff:
    raise UserError(f"{what} was trained on a different synthetic world than the log's "
                    f"(field: log vs policy) {diff}; use a policy trained on the log's dataset.")


def plot_days(reports_by_policy: dict[str, list[dict]], path: str) -> None:
  """One PNG: retention, clicks and watch per active user, satisfaction, by day, per policy."""
  try:
    import matplotlib
  except ModuleNotFoundError as e:
    raise UserError(f"the plot {path} needs the plots extra ({e.name} is not installed): "
                    "pip install 'jaxrec[plots]'") from e
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt
  panels = [("retention", "active users / users"), ("clicks_per_active", "clicks per active user"),
            ("watch_per_active", "watch per active user"), ("satisfaction", "mean satisfaction")]
  fig, axes = plt.subplots(1, len(panels), figsize=(4 * len(panels), 3.2))
  for ax, (key, title) in zip(axes, panels):
    for name, reports in reports_by_policy.items():
      ax.plot([r["day"] for r in reports], [r[key] for r in reports], label=name)
    ax.set_title(title, fontsize=10)
    ax.set_xlabel("day")
  axes[0].legend(fontsize=8)
  fig.tight_layout()
  fig.savefig(path, dpi=100)
  plt.close(fig)


def format_days(reports: list[dict]) -> str:
  cols = [("day", "d"), ("active_users", "d"), ("retention", ".3f"), ("clicks_per_active", ".3f"),
          ("watch_per_active", ".3f"), ("likes_per_active", ".3f"),
          ("abandoned_per_active", ".3f"), ("satisfaction", ".3f")]
  heads = ["day", "active", "retention", "clicks/act", "watch/act", "likes/act", "abandon/act",
           "satisfaction"]
  lines = [" ".join(f"{h:>12}" for h in heads)]
  for r in reports:
    lines.append(" ".join(f"{format(r[c], f):>12}" for c, f in cols))
  return "\n".join(lines)


def make_policy(bundle_path: str, world: World, *, mmr_lambda: float = 0.7,
                temperature: float | None = None, candidates: int = 20, retrieved: int = 200):
  """The bundle's serving pipeline as a policy: deterministic (MMR with `mmr_lambda`), or, with a
  `temperature`, Plackett-Luce sampling from the ranker's top `candidates` (a logging policy with
  known propensities)."""
  from jaxrec.eval import policies
  from jaxrec.rerank.pipeline import RerankConfig
  from serving.recommender import ServingConfig
  if temperature is not None:
    policies.check_temperature(temperature)  # before the models load
    return policies.SoftmaxPolicy(policies.ServingScorer(bundle_path, world, candidates, retrieved),
                                  temperature)
  if not (isinstance(retrieved, (int, np.integer)) and retrieved >= 1):
    raise UserError(f"retrieved must be a positive integer, got {retrieved!r}")
  return policies.ServingPolicy(bundle_path, world, ServingConfig(
      candidates=retrieved, rerank=RerankConfig(mmr_lambda=mmr_lambda)))


def simulate(policy_path: str, days: int, out: str, *, users: int | None = None, k: int = 10,
             seed: int = 0, mmr_lambda: float = 0.7, temperature: float | None = None,
             candidates: int = 20, log: bool = False) -> dict:
  """`jaxrec simulate`: runs the bundle's policy in its dataset's world for `days` days and writes
  OUT/simulation.json, OUT/days.png and, with `log`, the decision log in OUT."""
  if not (isinstance(days, (int, np.integer)) and days >= 1):
    raise UserError(f"--days must be at least 1, got {days!r}")
  if not (isinstance(k, (int, np.integer)) and k >= 1):
    raise UserError(f"--k (the slate size) must be at least 1, got {k!r}")
  if os.path.exists(out) and not os.path.isdir(out):
    raise UserError(f"--out {out} exists and is not a directory.")
  bundle, synthetic = bundle_world_config(policy_path)
  world = World(synthetic, users=users, seed=seed)
  policy = make_policy(bundle, world, mmr_lambda=mmr_lambda, temperature=temperature,
                       candidates=candidates)
  reports, decisions = run(world, policy, days, k=k, seed=seed, log=log)
  os.makedirs(out, exist_ok=True)
  result = {"policy": policy.name, "bundle": os.path.abspath(bundle), "k": k, "seed": seed,
            **world_description(world), "days": reports}
  with open(os.path.join(out, "simulation.json"), "w") as f:
    json.dump(result, f, indent=2)
  plot_days({policy.name: reports}, os.path.join(out, "days.png"))
  if log:
    write_log(out, world, decisions, days=days, k=k, seed=seed, policy=policy.name)
  return result


def evaluate_log(logs: str, policy_path: str, out: str | None = None, *,
                 temperature: float | None = None, candidates: int = 20, reward: str = "click",
                 max_weight: float = 10.0, n_boot: int = 1000, seed: int = 0) -> dict:
  """`jaxrec ope`: off-policy estimates of the bundle's policy's first-slot reward on a log."""
  from jaxrec.eval import offpolicy, ope
  meta, columns = read_log(logs)
  bundle, synthetic = bundle_world_config(policy_path)
  check_same_world(SyntheticConfig(**meta["synthetic"]), synthetic, f"--policy {policy_path}")
  world = world_of_log(meta)
  if temperature is None:
    # A deterministic target: the serving pipeline's first item (MMR's first pick is always the
    # best-scored one, so the first slot does not depend on its lambda), over the same ranked
    # candidates the reward model's features come from.
    from jaxrec.eval import policies
    target = policies.GreedyPolicy(policies.ServingScorer(bundle, world, candidates))
  else:
    target = make_policy(bundle, world, temperature=temperature, candidates=candidates)
  estimates = offpolicy.evaluate(world, columns, target, reward=reward, max_weight=max_weight,
                                 n_boot=n_boot, seed=seed)
  return ope.report(estimates, out, logs=os.path.abspath(logs), logging_policy=meta["policy"],
                    target_policy=target.name, reward=f"first-slot {reward}")
