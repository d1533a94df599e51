"""Training on a data x model mesh of 8 fake CPU devices gives the numbers one device gives."""

import json
import os
import subprocess
import sys

import pytest

from jaxrec.config import apply_overrides, load_config
from jaxrec.train.evaluate import evaluate_workdir
from jaxrec.train.trainer import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = """
import json, sys
from jaxrec.config import apply_overrides, load_config
from jaxrec.train.trainer import train
import jax
assert jax.device_count() == 8, jax.devices()
config = apply_overrides(load_config(sys.argv[2]), sys.argv[3:])
results = train(config, sys.argv[1])
print("RESULTS" + json.dumps(results))
"""


# Each test starts a process with 8 fake devices.
pytestmark = [pytest.mark.multidevice, pytest.mark.integration]

EIGHT_DEVICES = {**os.environ, "JAX_PLATFORMS": "cpu",  # conftest's XLA_FLAGS, and 8 devices
                 "XLA_FLAGS": " ".join([os.environ.get("XLA_FLAGS", ""),
                                        "--xla_force_host_platform_device_count=8"]).strip()}


def test_embedding_tables_on_8_devices():
  """Runs tests/multidevice in a process that has 8 fake devices."""
  result = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           os.path.join(ROOT, "tests", "multidevice")],
                          capture_output=True, text=True, cwd=ROOT, env=EIGHT_DEVICES)
  assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
  assert " passed" in result.stdout and "skipped" not in result.stdout, result.stdout[-2000:]


def train_on_8_devices(workdir: str, config: str, overrides: list[str]) -> dict:
  result = subprocess.run([sys.executable, "-c", SCRIPT, workdir, config, *overrides],
                          capture_output=True, text=True, cwd=ROOT, env=EIGHT_DEVICES)
  assert result.returncode == 0, result.stderr[-3000:]
  return json.loads(result.stdout.split("RESULTS")[-1])


@pytest.mark.slow
def test_ranker_trained_on_8_devices_restores_in_a_one_device_process(ml100k, tmp_path):
  """A DLRM trained with its tables split over 4 devices (mesh 2 x 4) loads, as a serving or
  evaluation process on one device would load it, and scores the test split the same."""
  workdir = str(tmp_path / "dlrm")
  trained = train_on_8_devices(workdir, "configs/movielens_dlrm.py:smoke",
                               [f"data.dir={ml100k.path}", "mesh.shape=(2,4)",
                                "train.num_steps=20", "train.eval_every=10"])
  restored = evaluate_workdir(workdir, "test")
  assert restored["step"] == trained["best_step"]
  for key in ("click/auc", "like/auc", "rating/rmse", "ndcg@10"):
    assert restored[key] == pytest.approx(trained["test"][key], abs=1e-4), key


@pytest.mark.slow
def test_mesh_of_8_devices_matches_one_device(ml100k, tmp_path):
  overrides = [f"data.dir={ml100k.path}", "mesh.shape=(4,2)", "train.patience=0"]
  sharded = train_on_8_devices(str(tmp_path / "mesh"), "configs/movielens_sasrec.py:smoke",
                               overrides)
  single = train(apply_overrides(load_config(os.path.join(ROOT, "configs",
                                                          "movielens_sasrec.py:smoke")),
                                 [f"data.dir={ml100k.path}", "mesh.shape=(1,1)",
                                  "train.patience=0"]), str(tmp_path / "single"))
  for split in ("valid", "test"):
    for key in ("ndcg@10", "recall@20", "mrr@10"):
      assert sharded[split][key] == pytest.approx(single[split][key], abs=2e-3)
