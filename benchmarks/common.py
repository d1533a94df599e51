"""Shared by the benchmark scripts: where results go, and the machine they were measured on."""

from __future__ import annotations

import json
import os
import platform
import sys
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def device() -> str:
  """The kind of device jax computes on ("cpu", "NVIDIA H200", ...)."""
  import jax
  return jax.devices()[0].device_kind


def write_result(name: str, result: dict) -> str:
  os.makedirs(RESULTS, exist_ok=True)
  machine = {"cpus": os.cpu_count(), "python": sys.version.split()[0],
             "platform": platform.platform()}
  if "jax" in sys.modules:  # what the numbers ran on: a GPU's timings are not this CPU's
    machine.update(jax=sys.modules["jax"].__version__, device=device())
  result = {**result, "machine": machine,
            "date": time.strftime("%Y-%m-%d")}
  path = os.path.join(RESULTS, f"{name}.json")
  with open(path, "w") as f:
    json.dump(result, f, indent=2)
  return path


def print_table(header: list[str], rows: list[list], widths: list[int] | None = None) -> None:
  widths = widths or [max(len(str(x)) for x in col) + 2 for col in zip(header, *rows)]
  for row in [header] + rows:
    print("".join(str(x).rjust(w) if i else str(x).ljust(w)
                  for i, (x, w) in enumerate(zip(row, widths))))


def train_movielens(config_name: str, overrides: list[str], workdir: str) -> dict:
  """Trains configs/movielens_{config_name}.py with `overrides` into `workdir`; the results
  with the wall-clock `seconds` it took."""
  return train_config(f"movielens_{config_name}.py", overrides, workdir)


def train_config(config_file: str, overrides: list[str], workdir: str) -> dict:
  """Trains configs/`config_file` with `overrides` into `workdir`: its results and `seconds`."""
  from jaxrec.config import apply_overrides, load_config
  from jaxrec.train.trainer import train
  config = load_config(os.path.join(ROOT, "configs", config_file))
  started = time.perf_counter()
  results = train(apply_overrides(config, overrides), workdir)
  results["seconds"] = time.perf_counter() - started
  return results
