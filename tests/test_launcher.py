"""launchers/tpu.py's commands (via --dry-run, in a throwaway git repository) and the multi-host
set-up in jaxrec/parallel/distributed.py (with jax.distributed.initialize recorded, not run)."""

import importlib.util
import os
import subprocess
import sys
import tempfile

import jax
import pytest

from jaxrec.errors import UserError
from jaxrec.parallel import distributed

_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_spec = importlib.util.spec_from_file_location("launchers_tpu", f"{_ROOT}/launchers/tpu.py")
tpu = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = tpu  # dataclasses look their module up there
_spec.loader.exec_module(tpu)

GC = "gcloud compute tpus tpu-vm"
CONFIG = """
import ml_collections

def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.train = ml_collections.ConfigDict({"num_steps": 10 if arg is None else 1})
  c.tpu = ml_collections.ConfigDict({"name": "cfg-tpu", "zone": "us-central2-b",
                                     "accelerator_type": "v4-32", "runtime_version": ""})
  return c
"""
PLAIN = "import ml_collections\n\ndef get_config():\n  return ml_collections.ConfigDict({'a': 1})\n"


@pytest.fixture
def repo(tmp_path, monkeypatch):
  """A committed repository holding configs/tpu.py and configs/plain.py; the launcher's REPO."""
  (tmp_path / "configs").mkdir()
  (tmp_path / "configs/tpu.py").write_text(CONFIG)
  (tmp_path / "configs/plain.py").write_text(PLAIN)
  git = ["git", "-C", str(tmp_path), "-c", "user.name=t", "-c", "user.email=t@t"]
  subprocess.run(git + ["init", "-q"], check=True)
  subprocess.run(git + ["add", "configs"], check=True)
  subprocess.run(git + ["commit", "-q", "-m", "configs"], check=True)
  monkeypatch.setattr(tpu, "REPO", str(tmp_path))
  monkeypatch.chdir(tmp_path)
  return tmp_path


def dry_run(capsys, *argv):
  assert tpu.main([*argv, "--dry-run"]) == 0, capsys.readouterr().err
  return capsys.readouterr().out.splitlines()


def fails(capsys, *argv, dry=True):
  assert tpu.main([*argv] + (["--dry-run"] if dry else [])) == 2
  captured = capsys.readouterr()
  assert captured.out == ""
  return captured.err


def test_create(capsys):
  assert dry_run(capsys, "create", "--name", "rec-v5e", "--zone", "us-west4-a",
                 "--accelerator-type", "v5litepod-8", "--spot") == [
      f"{GC} create rec-v5e --zone us-west4-a --accelerator-type v5litepod-8 "
      "--version v2-alpha-tpuv5-lite --spot"]


@pytest.mark.parametrize("accelerator, version", [
    ("v5litepod-16", "v2-alpha-tpuv5-lite"), ("v5p-64", "v2-alpha-tpuv5"),
    ("v4-8", "tpu-ubuntu2204-base")])
def test_runtime_version_defaults_per_family(capsys, accelerator, version):
  [line] = dry_run(capsys, "create", "--name", "a", "--zone", "z-1", "--accelerator-type",
                   accelerator, "--preemptible")
  assert line.endswith(f"--accelerator-type {accelerator} --version {version} --preemptible")


def test_flags_override_the_default_runtime_and_add_the_project(capsys):
  assert dry_run(capsys, "create", "--name", "a", "--zone", "z-1", "--accelerator-type", "v9x-8",
                 "--runtime-version", "my-runtime", "--project", "my proj") == [
      f"{GC} create a --zone z-1 --project 'my proj' --accelerator-type v9x-8 --version my-runtime"]
  assert "--runtime-version" in fails(capsys, "create", "--name", "a", "--zone", "z-1",
                                      "--accelerator-type", "v9x-8")


def test_tpu_fields_come_from_the_config(repo, capsys):
  assert dry_run(capsys, "create", "--config", "configs/tpu.py") == [
      f"{GC} create cfg-tpu --zone us-central2-b --accelerator-type v4-32 "
      "--version tpu-ubuntu2204-base"]
  # Flags win over the config, and --config.tpu.* overrides are applied before reading it.
  assert dry_run(capsys, "delete", "--config", "configs/tpu.py", "--name", "flag-tpu",
                 "--config.tpu.zone=europe-west4-a") == [
      f"{GC} delete flag-tpu --zone europe-west4-a --quiet"]


def test_run_copies_head_then_trains_on_all_workers(repo, capsys):
  sha = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True,
                       text=True, check=True).stdout.strip()
  tarball = os.path.join(tempfile.gettempdir(), "jaxrec-cfg-tpu.tar.gz")
  lines = dry_run(capsys, "run", "--config", f"{repo}/configs/tpu.py:small", "--workdir",
                  "gs://bucket/run 1", "--config.train.num_steps=5", "--follow")
  assert lines == [
      f"git -C {repo} archive --format=tar.gz --output {tarball} {sha}",
      f"{GC} scp {tarball} cfg-tpu:jaxrec.tar.gz --zone us-central2-b --worker=all",
      f"{GC} ssh cfg-tpu --zone us-central2-b --worker=all --command 'mkdir -p ~/jaxrec && "
      "tar -xzf ~/jaxrec.tar.gz -C ~/jaxrec && cd ~/jaxrec && bash tpu/setup.sh && "
      f"(JAXREC_DISTRIBUTED=auto JAXREC_GIT_SHA={sha} nohup .venv/bin/jaxrec train --config "
      "configs/tpu.py:small --workdir '\"'\"'gs://bucket/run 1'\"'\"' --config.train.num_steps=5 "
      "> train.log 2>&1 < /dev/null &)'",
      f"{GC} ssh cfg-tpu --zone us-central2-b --worker=0 --command "
      "'tail -n +1 -f ~/jaxrec/train.log'"]


def test_run_refuses_configs_the_workers_would_not_get(repo, capsys, tmp_path_factory):
  (repo / "configs/new.py").write_text(PLAIN)
  assert "git add configs/new.py" in fails(capsys, "run", "--name", "a", "--zone", "z-1",
                                           "--config", "configs/new.py", "--workdir", "w")
  outside = tmp_path_factory.mktemp("elsewhere") / "c.py"
  outside.write_text(PLAIN)
  assert "outside the repository" in fails(capsys, "run", "--name", "a", "--zone", "z-1",
                                           "--config", str(outside), "--workdir", "w")
  assert "does not exist" in fails(capsys, "run", "--config", "configs/tpu.py", "--workdir", "w",
                                   "--config.train.num_step=5")


def test_logs_and_delete(capsys):
  where = ["--name", "rec", "--zone", "us-east5-a", "--project", "p"]
  ssh = f"{GC} ssh rec --zone us-east5-a --project p"
  assert dry_run(capsys, "logs", *where) == [
      f"{ssh} --worker=0 --command 'tail -n +1 -f ~/jaxrec/train.log'"]
  assert dry_run(capsys, "logs", *where, "--worker", "all")[0].startswith(f"{ssh} --worker=all ")
  assert "--worker 'x'" in fails(capsys, "logs", *where, "--worker", "x")
  assert dry_run(capsys, "delete", *where) == [f"{GC} delete rec --zone us-east5-a --project p "
                                               "--quiet"]


@pytest.mark.parametrize("name", ["Rec", "1rec", "rec-", "rec_1", "r" * 64])
def test_bad_name(capsys, name):
  assert "not valid" in fails(capsys, "delete", "--name", name, "--zone", "z-1")


@pytest.mark.parametrize("accelerator", ["v5e", "tpu-8", "v5litepod", "V4-8", "v4-8x"])
def test_bad_accelerator_type(capsys, accelerator):
  err = fails(capsys, "create", "--name", "a", "--zone", "z-1", "--accelerator-type", accelerator)
  assert f"accelerator type {accelerator!r} is not valid" in err


def test_missing_settings_say_which_flag(capsys):
  assert "pass --zone" in fails(capsys, "delete", "--name", "a")
  assert "pass --name" in fails(capsys, "delete", "--zone", "z-1")
  assert "--accelerator-type" in fails(capsys, "create", "--name", "a", "--zone", "z-1")
  assert "need a --config" in fails(capsys, "delete", "--name", "a", "--zone", "z",
                                    "--config.x=1")


def test_missing_gcloud(capsys, monkeypatch):
  monkeypatch.setattr(tpu.shutil, "which", lambda name: None)
  monkeypatch.setattr(tpu.subprocess, "run", lambda *a, **k: pytest.fail("ran a command"))
  err = fails(capsys, "delete", "--name", "a", "--zone", "z-1", dry=False)
  assert "install the Google Cloud SDK" in err and "--dry-run" in err


def test_commands_run_in_order_and_stop_at_a_failure(capsys, monkeypatch):
  ran = []

  def fake_run(command, check):
    ran.append(command)
    raise subprocess.CalledProcessError(7, command)

  monkeypatch.setattr(tpu.shutil, "which", lambda name: "/usr/bin/gcloud")
  monkeypatch.setattr(tpu.subprocess, "run", fake_run)
  assert tpu.main(["delete", "--name", "a", "--zone", "z-1"]) == 7
  assert ran == [tpu.delete_commands(tpu.Tpu("a", "z-1"))[0]]
  assert "exit code 7" in capsys.readouterr().err


@pytest.mark.integration
def test_runs_as_a_script():
  result = subprocess.run([sys.executable, f"{_ROOT}/launchers/tpu.py", "delete", "--name", "a",
                           "--zone", "z-1", "--dry-run"], capture_output=True, text=True)
  assert (result.returncode, result.stdout) == (0, f"{GC} delete a --zone z-1 --quiet\n")
  result = subprocess.run([sys.executable, f"{_ROOT}/launchers/tpu.py", "delete", "--name", "A",
                           "--zone", "z-1", "--dry-run"], capture_output=True, text=True)
  assert result.returncode == 2 and "Traceback" not in result.stderr


# --- jaxrec/parallel/distributed.py ---

@pytest.fixture
def calls(monkeypatch):
  """The jax.distributed.initialize calls made, with no cluster and a clean environment."""
  for name in ("JAXREC_DISTRIBUTED", "TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES",
               *distributed._EXPLICIT):
    monkeypatch.delenv(name, raising=False)
  monkeypatch.setattr(distributed, "_done", None)
  recorded = []
  monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: recorded.append(kw))
  monkeypatch.setattr(jax.distributed, "is_initialized", lambda: bool(recorded))
  monkeypatch.setattr(jax, "process_index", lambda: 0)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  return recorded


def test_single_host_does_nothing(calls, monkeypatch):
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "localhost")
  assert distributed.initialize() == distributed.DistributedInfo(False, "single-host", 0, 1)
  assert calls == []


def test_explicit_cluster_initializes_once(calls, monkeypatch):
  monkeypatch.setenv("JAXREC_COORDINATOR", "10.0.0.2:1234")
  monkeypatch.setenv("JAXREC_NUM_PROCESSES", "4")
  monkeypatch.setenv("JAXREC_PROCESS_ID", "3")
  info = distributed.initialize()
  assert info == distributed.DistributedInfo(True, "explicit", 3, 4)
  assert distributed.initialize() is info
  assert calls == [dict(coordinator_address="10.0.0.2:1234", num_processes=4, process_id=3)]


def test_arguments_complete_the_environment(calls, monkeypatch):
  monkeypatch.setenv("JAXREC_COORDINATOR", "host:99")
  distributed.initialize(num_processes=2, process_id=0)
  assert calls == [dict(coordinator_address="host:99", num_processes=2, process_id=0)]


@pytest.mark.parametrize("hosts", ["TPU_WORKER_HOSTNAMES", "TPU_PROCESS_ADDRESSES"])
def test_tpu_pod_lets_jax_find_the_coordinator(calls, monkeypatch, hosts):
  monkeypatch.setenv(hosts, "t1k-w-0,t1k-w-1")
  assert distributed.initialize() == distributed.DistributedInfo(True, "tpu-pod", 0, 2)
  assert calls == [{}]


def test_auto_and_off(calls, monkeypatch):
  monkeypatch.setenv("JAXREC_DISTRIBUTED", "off")
  monkeypatch.setenv("TPU_WORKER_HOSTNAMES", "a,b")
  monkeypatch.setenv("JAXREC_COORDINATOR", "only-this:1")
  assert not distributed.initialize().initialized and calls == []
  monkeypatch.setenv("JAXREC_DISTRIBUTED", "maybe")
  with pytest.raises(UserError, match="'auto'"):
    distributed.initialize()
  monkeypatch.delenv("TPU_WORKER_HOSTNAMES")
  monkeypatch.delenv("JAXREC_COORDINATOR")
  monkeypatch.setenv("JAXREC_DISTRIBUTED", "auto")
  assert distributed.initialize().mode == "auto" and calls == [{}]


@pytest.mark.parametrize("env, message", [
    ({"JAXREC_COORDINATOR": "h:1"}, "JAXREC_NUM_PROCESSES and JAXREC_PROCESS_ID not"),
    ({"JAXREC_NUM_PROCESSES": "2", "JAXREC_PROCESS_ID": "0"}, "JAXREC_COORDINATOR not"),
    ({"JAXREC_COORDINATOR": "h", "JAXREC_NUM_PROCESSES": "2", "JAXREC_PROCESS_ID": "0"},
     "not host:port"),
    ({"JAXREC_COORDINATOR": "h:1", "JAXREC_NUM_PROCESSES": "0", "JAXREC_PROCESS_ID": "0"},
     "positive integer"),
    ({"JAXREC_COORDINATOR": "h:1", "JAXREC_NUM_PROCESSES": "2", "JAXREC_PROCESS_ID": "2"},
     "0..1")])
def test_bad_explicit_settings(calls, monkeypatch, env, message):
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  with pytest.raises(UserError, match=message):
    distributed.initialize()
  assert calls == []
