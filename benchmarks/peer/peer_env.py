"""The peer's own environment: a venv with RecBole 1.2.1 and a CPU PyTorch, built on first use.

jaxrec does not depend on any of it. RecBole 1.2.1 (2023) predates NumPy 2 and pandas 2.2, so the
venv pins them below; torch==2.13.0 is a CPU build on these machines (PyPI's default Linux torch
is a CUDA build of several GB, fine on a GPU machine). `--peer-python` skips all this and uses an
interpreter that already has recbole (e.g. on a lent GPU machine).
"""

from __future__ import annotations

import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
# At the repository root beside .venv: not under benchmarks/, whose sources tests walk.
VENV = os.path.join(os.path.dirname(os.path.dirname(HERE)), ".peer-venv")
REQUIREMENTS = ["torch==2.13.0", "recbole==1.2.1", "numpy<2", "pandas<2.2", "scipy<1.14"]


def peer_python(venv: str = VENV) -> str:
  """The venv's interpreter, creating the venv and installing REQUIREMENTS when they differ from
  what it was built with."""
  python = os.path.join(venv, "bin", "python")
  marker = os.path.join(venv, "peer-requirements.txt")
  wanted = "\n".join(REQUIREMENTS) + "\n"
  if os.path.exists(marker) and open(marker).read() == wanted and os.path.exists(python):
    return python
  print(f"building the peer venv at {venv} ({' '.join(REQUIREMENTS)}) ...", flush=True)
  subprocess.run([sys.executable, "-m", "venv", venv], check=True)
  subprocess.run([python, "-m", "pip", "install", "-q", *REQUIREMENTS], check=True)
  subprocess.run([python, "-c", "import recbole, torch"], check=True)
  with open(marker, "w") as f:
    f.write(wanted)
  return python
