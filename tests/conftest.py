import contextlib
import fcntl
import json
import os
import shutil

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One persistent JAX compilation cache for every pytest worker, the CLI and 8-device processes the
# tests start (they inherit os.environ) and later runs: the suite compiles the same small models
# dozens of times. Set before jax is imported, so that subprocesses and this process agree. (No
# size cap: JAX needs the `filelock` package for one; `rm -rf .pytest_cache` empties it.)
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", os.path.join(ROOT, ".pytest_cache", "jax"))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")  # they compile in <1 s
# The suite compiles far more than it runs (small models, a few steps each), and on a cold cache
# most of a compile is LLVM optimising the CPU code: level 0 halves it (a smoke two-tower's train
# step 29 s -> 13 s). Backend code generation only: XLA's own HLO passes are unchanged, and without
# fast-math LLVM does not reorder float arithmetic at any level. Inherited by the processes the
# tests start; a level already set in XLA_FLAGS is left alone.
if "--xla_backend_optimization_level" not in os.environ.get("XLA_FLAGS", ""):
  os.environ["XLA_FLAGS"] = " ".join(
      [os.environ.get("XLA_FLAGS", ""), "--xla_backend_optimization_level=0"]).strip()

import pytest  # noqa: E402

from jaxrec.config import apply_overrides, load_config  # noqa: E402
from jaxrec.data.movielens import load_movielens_100k  # noqa: E402
from jaxrec.data.prepare import prepare  # noqa: E402
from jaxrec.data.storage import PreparedDataset  # noqa: E402


@contextlib.contextmanager
def built_once(tmp_path_factory, name):
  """A directory shared by all xdist workers: yields (path, built); build it when `built` is
  False. A session fixture alone is built once per worker; the lock makes it once per run."""
  root = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    root = root.parent  # the run's directory, above each worker's own
  path, done = root / name, root / f"{name}.done"
  with open(root / f"{name}.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not done.exists():
      shutil.rmtree(path, ignore_errors=True)  # a build that failed half-way
    yield str(path), done.exists()
    done.touch()


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """The download cache: the developer's own when set, else one per test session."""
  return os.environ.get("JAXREC_DATA_DIR") or str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def ml100k_raw(data_dir):
  return load_movielens_100k(data_dir)


@pytest.fixture(scope="session")
def ml100k(request, tmp_path_factory):
  with built_once(tmp_path_factory, "ml-100k") as (path, built):
    return PreparedDataset(path) if built else prepare(request.getfixturevalue("ml100k_raw"), path)


def _smoke_run(tmp_path_factory, ml100k, model):
  """configs/movielens_<model>.py:smoke trained on MovieLens-100K, once per run: several modules
  test the same run. Read-only for them: (workdir, train()'s results)."""
  from jaxrec.train.trainer import train
  with built_once(tmp_path_factory, f"smoke-{model}") as (workdir, built):
    returned = f"{workdir}.returned.json"  # beside the workdir, which stays as train() left it
    if not built:
      config = load_config(os.path.join(ROOT, "configs", f"movielens_{model}.py:smoke"))
      results = train(apply_overrides(config, [f"data.dir={ml100k.path}"]), workdir)
      with open(returned, "w") as f:
        json.dump(results, f)
  with open(returned) as f:
    return workdir, json.load(f)


@pytest.fixture(scope="session")
def smoke_two_tower(tmp_path_factory, ml100k):
  return _smoke_run(tmp_path_factory, ml100k, "two_tower")


@pytest.fixture(scope="session")
def smoke_dlrm(tmp_path_factory, ml100k):
  return _smoke_run(tmp_path_factory, ml100k, "dlrm")


@pytest.fixture(scope="session")
def smoke_sasrec(tmp_path_factory, ml100k):
  return _smoke_run(tmp_path_factory, ml100k, "sasrec")
