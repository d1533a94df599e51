#!/usr/bin/env bash
# Installs the TPU build of JAX and this project into .venv on a Cloud TPU VM; run on every worker
# (launchers/tpu.py run does). Idempotent: a second run with the same pyproject.toml only prints
# the devices, so re-running a job costs seconds, not a reinstall.
set -euo pipefail
cd "$(dirname "$0")/.."

# The project pins python <3.12 and >=3.11; TPU VM images (Ubuntu 22.04) ship 3.10 only.
python=""
for candidate in python3.11 python3; do
  if command -v "$candidate" >/dev/null &&
     "$candidate" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python="$candidate"
    break
  fi
done
if [[ -z "$python" ]]; then
  echo "setup.sh: installing python3.11 with apt"
  sudo DEBIAN_FRONTEND=noninteractive apt-get update -q
  sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -q python3.11 python3.11-venv
  python=python3.11
fi

# Same version spec as pyproject.toml's "jax..." dependency, so TPU JAX satisfies the project and
# `pip install -e .` keeps it instead of pulling the CPU build.
jax_spec="$(sed -nE 's/^[[:space:]]*"jax([<>=!~][^"]*)".*/\1/p' pyproject.toml | head -n 1)"
# The stamp holds pyproject.toml's hash, not its mtime: every `run` unpacks a fresh copy.
stamp=.venv/.tpu-installed
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [[ ! -f "$stamp" || "$(cat "$stamp")" != "$want" ]]; then
  [[ -x .venv/bin/python ]] || "$python" -m venv .venv
  .venv/bin/python -m pip install --quiet -U pip
  .venv/bin/python -m pip install --quiet "jax[tpu]${jax_spec}" \
    -f https://storage.googleapis.com/jax-releases/libtpu_releases.html
  .venv/bin/python -m pip install --quiet -e .
  echo "$want" > "$stamp"
fi

# Joins the hosts into one JAX job the way training will, so a pod slice reports all its chips;
# on a slice, run this on every worker at once (launchers/tpu.py uses --worker=all).
JAXREC_DISTRIBUTED="${JAXREC_DISTRIBUTED:-auto}" .venv/bin/python -c '
import jax
from jaxrec.parallel.distributed import initialize
info = initialize()
print(f"process {info.process_index} of {info.process_count}:", jax.devices())'
