"""Launch jaxrec training on a Cloud TPU VM or pod slice with gcloud.

create makes the TPU, run starts `jaxrec train` on every worker, logs follows the log, delete
removes the TPU. Each builds gcloud commands; --dry-run prints them (one a line) instead.

  python launchers/tpu.py create --name rec-v5e --zone us-west4-a \
      --accelerator-type v5litepod-8 --spot
  python launchers/tpu.py run --name rec-v5e --zone us-west4-a \
      --config configs/movielens_sasrec.py --workdir gs://my-bucket/sasrec \
      --config.train.num_steps=20000
  python launchers/tpu.py logs --name rec-v5e --zone us-west4-a [--worker 1]
  python launchers/tpu.py delete --name rec-v5e --zone us-west4-a
  python launchers/tpu.py run ... --dry-run

--name, --zone, --accelerator-type, --runtime-version and --project may be left out when the
--config file sets them in a `config.tpu` group (name, zone, accelerator_type, runtime_version,
project). The runtime version defaults per TPU family (v5litepod: v2-alpha-tpuv5-lite, v5p:
v2-alpha-tpuv5, v4: tpu-ubuntu2204-base).

`run` copies the repository at HEAD (`git archive`: commit what the run needs) to ~/jaxrec on all
workers, runs tpu/setup.sh there, and starts the same `jaxrec train` on each under nohup, writing
~/jaxrec/train.log. A relative --workdir is relative to ~/jaxrec on each worker; on a pod slice
use gs://bucket/path, so that all workers write one shared checkpoint.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile

from jaxrec.config import apply_overrides, load_config, split_overrides
from jaxrec.errors import UserError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_GCLOUD = ["gcloud", "compute", "tpus", "tpu-vm"]
_RUNTIME = {"v2": "tpu-ubuntu2204-base", "v3": "tpu-ubuntu2204-base", "v4": "tpu-ubuntu2204-base",
            "v5litepod": "v2-alpha-tpuv5-lite", "v5e": "v2-alpha-tpuv5-lite",
            "v5p": "v2-alpha-tpuv5", "v6e": "v2-alpha-tpuv6e"}
_NAME = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_ACCELERATOR = re.compile(r"v\d+[a-z]*-\d+")


@dataclasses.dataclass(frozen=True)
class Tpu:
  name: str
  zone: str
  accelerator_type: str | None = None
  runtime_version: str | None = None
  project: str | None = None

  def where(self) -> list[str]:
    return ["--zone", self.zone] + (["--project", self.project] if self.project else [])


def default_runtime_version(accelerator_type: str) -> str:
  family = accelerator_type.split("-")[0]
  if family not in _RUNTIME:
    raise UserError(f"no default runtime version for {accelerator_type!r}; pass --runtime-version "
                    "(see `gcloud compute tpus versions list --zone ZONE`)")
  return _RUNTIME[family]


def resolve(args, config=None) -> Tpu:
  """The TPU from the flags, falling back on the config's `tpu` group, validated."""
  from_config = (config.get("tpu") if config is not None else None) or {}

  def pick(field: str) -> str | None:
    value = getattr(args, field, None) or from_config.get(field) or None
    return None if value is None else str(value)

  name, zone, accelerator = pick("name"), pick("zone"), pick("accelerator_type")
  for flag, value, field in (("--name", name, "name"), ("--zone", zone, "zone")):
    if not value:
      raise UserError(f"no TPU {field}: pass {flag} or set config.tpu.{field} in the --config file")
  if not _NAME.fullmatch(name):
    raise UserError(f"TPU name {name!r} is not valid: use 1-63 lowercase letters, digits and "
                    "hyphens, starting with a letter and not ending with a hyphen, e.g. rec-v5e")
  if accelerator and not _ACCELERATOR.fullmatch(accelerator):
    raise UserError(f"accelerator type {accelerator!r} is not valid: use FAMILY-SIZE such as "
                    "v5litepod-8, v5p-64, v4-32 or v6e-8")
  runtime = pick("runtime_version") or (accelerator and default_runtime_version(accelerator))
  return Tpu(name, zone, accelerator, runtime, pick("project"))


def create_commands(tpu: Tpu, spot: bool = False, preemptible: bool = False) -> list[list[str]]:
  if not tpu.accelerator_type:
    raise UserError("no accelerator type: pass --accelerator-type (e.g. v5litepod-8, v5p-64) or "
                    "set config.tpu.accelerator_type in the --config file")
  command = _GCLOUD + ["create", tpu.name] + tpu.where() + [
      "--accelerator-type", tpu.accelerator_type, "--version", tpu.runtime_version]
  return [command + (["--spot"] if spot else []) + (["--preemptible"] if preemptible else [])]


def run_commands(tpu: Tpu, config_spec: str, workdir: str, overrides: list[str], sha: str,
                 tarball: str) -> list[list[str]]:
  """Archive the commit `sha`, copy it to every worker, set up and start training on each."""
  train = [".venv/bin/jaxrec", "train", "--config", config_spec, "--workdir", workdir]
  train += [f"--config.{o}" for o in overrides]
  # JAXREC_DISTRIBUTED=auto: on a GCE TPU VM only the metadata server knows the other workers,
  # so jaxrec.parallel.distributed cannot tell a pod slice from one host by the environment.
  remote = (f"mkdir -p ~/jaxrec && tar -xzf ~/jaxrec.tar.gz -C ~/jaxrec && cd ~/jaxrec && "
            f"bash tpu/setup.sh && (JAXREC_DISTRIBUTED=auto JAXREC_GIT_SHA={sha} nohup "
            f"{shlex.join(train)} > train.log 2>&1 < /dev/null &)")
  return [["git", "-C", REPO, "archive", "--format=tar.gz", "--output", tarball, sha],
          _GCLOUD + ["scp", tarball, f"{tpu.name}:jaxrec.tar.gz"] + tpu.where() + ["--worker=all"],
          _GCLOUD + ["ssh", tpu.name] + tpu.where() + ["--worker=all", "--command", remote]]


def logs_commands(tpu: Tpu, worker: str = "0") -> list[list[str]]:
  if not (worker == "all" or worker.isdigit()):
    raise UserError(f"--worker {worker!r} is not a worker: use its index (0 is the first) or all")
  return [_GCLOUD + ["ssh", tpu.name] + tpu.where() + [
      f"--worker={worker}", "--command", "tail -n +1 -f ~/jaxrec/train.log"]]


def delete_commands(tpu: Tpu) -> list[list[str]]:
  return [_GCLOUD + ["delete", tpu.name] + tpu.where() + ["--quiet"]]


def _git(*args: str) -> str:
  try:
    result = subprocess.run(["git", "-C", REPO, *args], capture_output=True, text=True)
  except OSError as e:
    raise UserError(f"cannot run git ({e}); `run` copies the repository with git archive, so "
                    "install git") from None
  if result.returncode != 0:
    raise UserError(f"`git {' '.join(args)}` in {REPO} failed: {result.stderr.strip()}; `run` "
                    "needs a git checkout of jaxrec with at least one commit")
  return result.stdout


def _remote_spec(spec: str, sha: str) -> str:
  """The config path relative to the repository, as the workers see it, checked to be at `sha`."""
  path, sep, arg = spec.partition(".py:")
  path = path + ".py" if sep else spec
  relative = os.path.relpath(os.path.abspath(path), REPO)
  if relative == os.pardir or relative.startswith(os.pardir + os.sep):
    raise UserError(f"config {path!r} is outside the repository {REPO}; `run` copies only the "
                    "repository, so move the config into it (e.g. configs/) and commit it")
  if subprocess.run(["git", "-C", REPO, "cat-file", "-e", f"{sha}:{relative}"],
                    capture_output=True).returncode != 0:
    raise UserError(f"config {relative!r} is not committed; `run` copies the repository at HEAD "
                    f"(git archive), so `git add {relative}` and commit it first")
  return relative + (f":{arg}" if sep else "")


def _commands(args, overrides: list[str]) -> list[list[str]]:
  config = None
  if args.config:
    config = apply_overrides(load_config(args.config), overrides)
  elif overrides:
    raise UserError(f"--config.* overrides need a --config file, got {overrides}")
  tpu = resolve(args, config)
  if args.command == "create":
    return create_commands(tpu, spot=args.spot, preemptible=args.preemptible)
  if args.command == "logs":
    return logs_commands(tpu, args.worker)
  if args.command == "delete":
    return delete_commands(tpu)
  if not args.config:
    raise UserError("`run` needs --config configs/FILE.py (optionally FILE.py:arg): the config "
                    "that `jaxrec train` runs on every worker")
  sha = _git("rev-parse", "HEAD").strip()
  changed = _git("status", "--porcelain", "--untracked-files=no").splitlines()
  if changed:
    print(f"tpu.py: warning: {len(changed)} uncommitted change(s) are not copied (run copies "
          f"HEAD {sha[:12]}): {', '.join(line[3:] for line in changed[:5])}"
          f"{' ...' if len(changed) > 5 else ''}", file=sys.stderr)
  tarball = os.path.join(tempfile.gettempdir(), f"jaxrec-{tpu.name}.tar.gz")
  commands = run_commands(tpu, _remote_spec(args.config, sha), args.workdir, overrides, sha,
                          tarball)
  return commands + (logs_commands(tpu) if args.follow else [])


def _execute(commands: list[list[str]]) -> int:
  if shutil.which("gcloud") is None:
    raise UserError("gcloud is not on PATH: install the Google Cloud SDK "
                    "(https://cloud.google.com/sdk/docs/install) and run `gcloud auth login`, "
                    "or pass --dry-run to print the commands instead")
  for command in commands:
    print(f"+ {shlex.join(command)}", file=sys.stderr, flush=True)
    try:
      subprocess.run(command, check=True)
    except subprocess.CalledProcessError as e:
      print(f"tpu.py: error: exit code {e.returncode} from: {shlex.join(command)}", file=sys.stderr)
      return e.returncode
    except KeyboardInterrupt:  # how `logs` ends; the training on the workers keeps running
      return 130
  return 0


def _parser() -> argparse.ArgumentParser:
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument("--name", help="TPU VM name (default: config.tpu.name)")
  common.add_argument("--zone", help="e.g. us-west4-a (default: config.tpu.zone)")
  common.add_argument("--project", help="Google Cloud project (default: gcloud's configured one)")
  common.add_argument("--accelerator-type", help="e.g. v5litepod-8, v5p-64, v4-32")
  common.add_argument("--runtime-version", help="TPU software version (default: per family)")
  common.add_argument("--config", help="configs/FILE.py or configs/FILE.py:arg; overrides "
                                       "--config.a.b=v are passed on to `jaxrec train`")
  common.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
  parser = argparse.ArgumentParser(prog="launchers/tpu.py", description=__doc__.splitlines()[0])
  sub = parser.add_subparsers(dest="command", required=True)
  create = sub.add_parser("create", parents=[common], help="create the TPU VM or pod slice")
  kind = create.add_mutually_exclusive_group()
  kind.add_argument("--spot", action="store_true", help="a Spot TPU: cheaper, may be reclaimed")
  kind.add_argument("--preemptible", action="store_true", help="a preemptible TPU (older form)")
  run = sub.add_parser("run", parents=[common], help="copy the code, train on all workers")
  run.add_argument("--workdir", required=True,
                   help="gs://bucket/path (pod slices need one), or a path on each "
                        "worker, relative to ~/jaxrec")
  run.add_argument("--follow", action="store_true", help="stream worker 0's log afterwards")
  logs = sub.add_parser("logs", parents=[common], help="stream a worker's train.log")
  logs.add_argument("--worker", default="0", help="worker index, or all (default 0)")
  sub.add_parser("delete", parents=[common], help="delete the TPU VM or pod slice")
  return parser


def main(argv: list[str] | None = None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  try:
    argv, overrides = split_overrides(argv)
    args = _parser().parse_args(argv)
    commands = _commands(args, overrides)
    if args.dry_run:
      print("\n".join(shlex.join(command) for command in commands))
      return 0
    return _execute(commands)
  except UserError as e:
    print(f"tpu.py: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
