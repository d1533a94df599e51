"""Running a policy in the simulated world (world.py) for N days: the per-day reports, the decision
columns a log is written from (log.py), the plot and the table of days."""

from __future__ import annotations

import numpy as np

from jaxrec.errors import UserError
from jaxrec.eval.simulation.log import RESPONSES
from jaxrec.eval.simulation.world import Requests, World


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
