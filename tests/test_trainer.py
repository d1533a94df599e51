import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from jaxrec.config import apply_overrides, load_config
from jaxrec.errors import UserError
from jaxrec.train.step import NonFiniteGuard, make_train_step
from jaxrec.train.trainer import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def smoke_config(name, prepared, **overrides):
  config = load_config(os.path.join(ROOT, "configs", f"movielens_{name}.py:smoke"))
  return apply_overrides(config, [f"data.dir={prepared}"] +
                         [f"{k}={v}" for k, v in overrides.items()])


# SASRec is conftest's shared run; the other two train their own.
@pytest.mark.parametrize("name", ["sasrec", pytest.param("bert4rec", marks=pytest.mark.slow),
                                  pytest.param("gru4rec", marks=pytest.mark.slow)])
def test_smoke_run_of_each_model(name, ml100k, tmp_path, request):
  if name == "sasrec":  # conftest's run, shared with other modules
    workdir, results = request.getfixturevalue("smoke_sasrec")
    tmp_path = pathlib.Path(workdir)
  else:
    results = train(smoke_config(name, ml100k.path), str(tmp_path))
  assert results["last_step"] == 6 and results["skipped_steps"] == 0
  for split in ("valid", "test"):
    assert results[split]["num_users"] == 943
    assert 0 <= results[split]["ndcg@10"] <= results[split]["recall@10"] <= 1
  assert "full ranking" in results["protocol"]
  history = results["valid_ndcg@10_history"]
  best_step, best_value = max(history, key=lambda h: (h[1], -h[0]))
  assert results["best_step"] == best_step  # the best validation checkpoint is the one tested
  assert results["valid"]["ndcg@10"] == pytest.approx(best_value, abs=1e-6)
  assert json.load(open(tmp_path / "results.json"))["best_step"] == results["best_step"]
  assert json.load(open(tmp_path / "config.json"))["model"]["name"] == name
  assert (tmp_path / "git_sha.txt").exists()
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))


@pytest.mark.slow
def test_sampled_protocol_is_reported_separately(ml100k, tmp_path):
  results = train(smoke_config("sasrec", ml100k.path, **{"eval.sampled_negatives": 100}),
                  str(tmp_path))
  test = results["test"]
  assert "sampled_ndcg@10" in test and "ndcg@10" in test
  assert "100 uniform negatives" in results["sampled_protocol"]
  assert test["sampled_recall@10"] >= test["recall@10"]  # 100 negatives are easier than all


def _train_subprocess(config, workdir, prepared, *extra):
  return subprocess.Popen(
      [sys.executable, "-m", "jaxrec.cli", "train", "--config", config, "--workdir", workdir,
       f"--config.data.dir={prepared}", *extra], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
      cwd=ROOT)


def _final_parameters(workdir):
  from jaxrec.train.evaluate import load_workdir_config
  from jaxrec.train.checkpoint import Checkpointer
  from jaxrec.train.trainer import Run
  config = load_workdir_config(workdir)
  run = Run(config)
  checkpoints = Checkpointer(workdir, 2, "ndcg@10")
  state, _, loop = checkpoints.restore(checkpoints.latest_step(), run.state, run.opt_state)
  checkpoints.close()
  return loop["step"], [np.asarray(x) for x in jax.tree.leaves(state)]


@pytest.mark.slow
@pytest.mark.integration
def test_killed_run_resumes_to_the_same_parameters(ml100k, tmp_path):
  config = os.path.join(ROOT, "configs", "movielens_sasrec.py:smoke")
  extra = ("--config.train.num_steps=24", "--config.train.patience=0")
  whole = _train_subprocess(config, str(tmp_path / "whole"), ml100k.path, *extra)
  killed_dir = tmp_path / "killed"
  killed = _train_subprocess(config, str(killed_dir), ml100k.path, *extra)
  deadline = time.time() + 120
  while time.time() < deadline and not (killed_dir / "checkpoints" / "6").exists():
    time.sleep(0.05)
  killed.send_signal(signal.SIGKILL)
  killed.wait()
  assert whole.wait() == 0, whole.stderr.read().decode()[-2000:]
  steps = [int(d) for d in os.listdir(killed_dir / "checkpoints") if d.isdigit()]
  assert max(steps) < 24, "the run finished before it could be killed"
  resumed = _train_subprocess(config, str(killed_dir), ml100k.path, *extra)
  assert resumed.wait() == 0, resumed.stderr.read().decode()[-2000:]
  step_a, params_a = _final_parameters(str(tmp_path / "whole"))
  step_b, params_b = _final_parameters(str(killed_dir))
  assert step_a == step_b == 24
  assert all(np.array_equal(a, b) for a, b in zip(params_a, params_b))


def test_non_finite_steps_are_skipped_and_counted():
  with nnx.use_eager_sharding(False):
    model = nnx.Linear(2, 1, rngs=nnx.Rngs(0))
  graphdef, state = nnx.split(model)
  tx = optax.sgd(0.1)
  loss = lambda m, batch, key: jnp.mean((m(batch["x"]) - batch["y"]) ** 2)
  step = jax.jit(make_train_step(graphdef, tx, loss, seed=0))
  opt_state = tx.init(state)
  good = {"x": jnp.ones((4, 2)), "y": jnp.zeros((4, 1))}
  bad = {"x": jnp.full((4, 2), jnp.nan), "y": jnp.zeros((4, 1))}
  before = jax.tree.map(np.asarray, state)
  state2, opt_state2, out = step(state, opt_state, bad, 1)
  assert not bool(out["finite"])
  assert all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before), jax.tree.leaves(state2)))
  state3, _, out = step(state2, opt_state2, good, 2)
  assert bool(out["finite"])
  assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(before),
                                                      jax.tree.leaves(state3)))
  guard = NonFiniteGuard(max_in_a_row=3)
  for i, finite in enumerate([False, False, True, False, False]):
    guard.update(finite, i)
  assert guard.skipped == 4 and guard.in_a_row == 2
  with pytest.raises(UserError, match="3 steps in a row.*learning_rate"):
    guard.update(False, 5)


SMOKE_SASREC = os.path.join(ROOT, "configs", "movielens_sasrec.py:smoke")


def _cli(capsys, *args) -> tuple[int, str]:
  """`jaxrec ARGS` in this process (a refusal needs no fresh JAX): (exit code, stderr). An
  unexpected exception propagates, so a passing call printed no traceback."""
  from jaxrec import cli
  capsys.readouterr()
  code = cli.main(list(args))
  return code, capsys.readouterr().err


@pytest.mark.integration
def test_bad_overrides_exit_2_with_a_message(tmp_path, capsys):
  def run(*args):
    return _cli(capsys, "train", "--config", SMOKE_SASREC, "--workdir", str(tmp_path), *args)
  code, err = run("--config.train.num_step=3")
  assert code == 2 and "num_steps" in err
  code, err = run("--config.train.num_steps=many")
  assert code == 2 and "int" in err


@pytest.mark.integration
def test_eval_command_prints_metrics_and_protocol_as_json(smoke_sasrec, tmp_path):
  workdir = smoke_sasrec[0]  # conftest's run, shared with other modules
  result = subprocess.run([sys.executable, "-m", "jaxrec.cli", "eval", "--workdir", workdir,
                           "--split", "test", "--json"], capture_output=True, text=True, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-2000:]
  out = json.loads(result.stdout)
  assert {"ndcg@10", "recall@10", "mrr@10", "protocol"} <= set(out)
  assert out["protocol"].startswith("full ranking") and out["num_users"] == 943
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert out["ndcg@10"] == pytest.approx(results["test"]["ndcg@10"], abs=1e-6)
  missing = subprocess.run([sys.executable, "-m", "jaxrec.cli", "eval", "--workdir",
                            str(tmp_path / "nothing")], capture_output=True, text=True, cwd=ROOT)
  assert missing.returncode == 2 and "not a training workdir" in missing.stderr


# Resuming under another config


@pytest.fixture(scope="module")
def trained_sasrec(smoke_sasrec):
  """A finished 6-step smoke run (conftest's, shared); tests resume copies of it."""
  return pathlib.Path(smoke_sasrec[0])


def _copy(workdir, tmp_path):
  import shutil
  return str(shutil.copytree(workdir, tmp_path / "run"))


def test_resume_with_a_changed_config_is_refused_naming_the_keys(ml100k, trained_sasrec,
                                                                  tmp_path):
  workdir = _copy(trained_sasrec, tmp_path)
  saved = open(os.path.join(workdir, "config.json")).read()
  with pytest.raises(UserError) as e:
    train(smoke_config("sasrec", ml100k.path, **{"optimizer.learning_rate": 0.01}), workdir)
  message = str(e.value)
  assert "optimizer.learning_rate: 0.002 -> 0.01" in message
  assert "--config-changes-ok optimizer.learning_rate" in message and "step 6" in message
  # A changed width is refused by the comparison, before Orbax sees the checkpoint, even when
  # it is accepted the restore's failure is one message; either way config.json stays as it was.
  with pytest.raises(UserError, match=r"model\.dim: 16 -> 32") as e:
    train(smoke_config("sasrec", ml100k.path, **{"model.dim": 32}), workdir)
  assert "Orbax" not in str(e.value) and "Traceback" not in str(e.value)
  with pytest.raises(UserError, match=r"does not restore under the accepted changes \(model\.dim\)"):
    train(smoke_config("sasrec", ml100k.path, **{"model.dim": 32}), workdir,
          config_changes_ok=("model.dim",))
  with pytest.raises(UserError, match="not a key of this config"):
    train(smoke_config("sasrec", ml100k.path), workdir, config_changes_ok=("model.dimm",))
  assert open(os.path.join(workdir, "config.json")).read() == saved
  assert not os.path.exists(os.path.join(workdir, "config_changes.json"))
  # The workdir is still the run it was: `jaxrec eval` reads it.
  from jaxrec.train.evaluate import evaluate_workdir
  result = evaluate_workdir(workdir, "test")
  results = json.load(open(os.path.join(workdir, "results.json")))
  assert result["ndcg@10"] == pytest.approx(results["test"]["ndcg@10"], abs=1e-6)


def test_accepted_config_changes_resume_and_are_recorded(ml100k, trained_sasrec, tmp_path):
  workdir = _copy(trained_sasrec, tmp_path)
  # Another spelling of the same data directory is not a change.
  config = smoke_config("sasrec", os.path.relpath(ml100k.path),
                        **{"optimizer.learning_rate": 0.01, "train.num_steps": 9})
  results = train(config, workdir, config_changes_ok=("optimizer.learning_rate", "train"))
  assert results["last_step"] == 9
  saved = json.load(open(os.path.join(workdir, "config.json")))
  assert saved["optimizer"]["learning_rate"] == 0.01 and saved["train"]["num_steps"] == 9
  history = json.load(open(os.path.join(workdir, "config_changes.json")))
  assert len(history) == 1 and history[0]["from_step"] == 6
  assert history[0]["changes"] == {"optimizer.learning_rate": {"old": 0.002, "new": 0.01},
                                   "train.num_steps": {"old": 6, "new": 9}}
  assert results["config_changes"] == history
  assert json.load(open(os.path.join(workdir, "results.json")))["config_changes"] == history


@pytest.mark.integration
def test_cli_refuses_changed_resume_and_bad_sizes_with_exit_2(ml100k, trained_sasrec, tmp_path,
                                                               capsys):
  workdir = _copy(trained_sasrec, tmp_path)
  saved = open(os.path.join(workdir, "config.json")).read()

  def run(*args):
    return _cli(capsys, "train", "--config", SMOKE_SASREC, "--workdir", workdir,
                f"--config.data.dir={ml100k.path}", *args)
  # --config-changes-ok reaches train(): the accepted key is not named, the other one is.
  code, err = run("--config.optimizer.learning_rate=0.01", "--config.model.dropout=0.1",
                  "--config-changes-ok", "optimizer.learning_rate")
  assert code == 2
  assert "model.dropout: 0.2 -> 0.1" in err
  assert "learning_rate: " not in err
  assert open(os.path.join(workdir, "config.json")).read() == saved
  for override, name in [("train.batch_size=0", "train.batch_size=0"),
                         ("model.dim=-4", "model.dim=-4"), ("train.num_steps=0", "num_steps=0")]:
    code, err = run(f"--config.{override}")
    assert code == 2, err[-2000:]
    assert name in err and ">= 1" in err
