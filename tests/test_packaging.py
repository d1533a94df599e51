"""pyproject.toml's dependencies and extras against the imports, the lock, and the core paths."""

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import tomllib

import pytest

from jaxrec.errors import UserError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOURCES = ("jaxrec", "serving", "benchmarks")
# The modules that only the extras bring; core paths import them lazily or not at all.
EXTRA_MODULES = ("fastapi", "starlette", "uvicorn", "httpx", "prometheus_client", "pydantic",
                 "matplotlib", "tensorflow_datasets", "apache_beam", "recbole", "torch")


def _project() -> dict:
  with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    return tomllib.load(f)["project"]


def _name(requirement: str) -> str:
  return re.split(r"[\s\[<>=~!;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def _imported_top_modules() -> set[str]:
  local = {"jaxrec", "serving", "benchmarks"}
  names = set()
  for source in SOURCES:
    for folder, _, files in os.walk(os.path.join(ROOT, source)):
      local.update(f[:-3] for f in files if f.endswith(".py"))  # benchmarks import each other
      for f in files:
        if f.endswith(".py"):
          with open(os.path.join(folder, f)) as fh:
            tree = ast.parse(fh.read())
          for node in ast.walk(tree):
            if isinstance(node, ast.Import):
              names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
              names.add(node.module.split(".")[0])
  return {n for n in names if n not in sys.stdlib_module_names and n not in local}


def test_every_imported_package_is_declared():
  project = _project()
  declared = {_name(r) for r in project["dependencies"]}
  for requirements in project["optional-dependencies"].values():
    declared.update(_name(r) for r in requirements)
  distributions = importlib.metadata.packages_distributions()
  missing = {}
  for module in _imported_top_modules():
    dists = {d.lower().replace("_", "-") for d in distributions.get(module, [module])}
    if not dists & declared:
      missing[module] = sorted(dists)
  assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_core_leaves_the_extras_out():
  core = {_name(r) for r in _project()["dependencies"]}
  for extra in ("serve", "tfds", "plots", "peers"):  # beam is array-record's own extra
    assert not core & {_name(r) for r in _project()["optional-dependencies"][extra]}, extra
  test = _project()["optional-dependencies"]["test"]
  assert any(r.startswith("jaxrec[") and all(e in r for e in ("serve", "tfds", "plots"))
             for r in test)


def test_lock_pins_every_locked_requirement():
  with open(os.path.join(ROOT, "requirements.lock")) as f:
    pins = dict(line.strip().split("==", 1) for line in f if "==" in line and line[0] != "#")
  pins = {_name(k): v for k, v in pins.items()}
  project = _project()
  locked = list(project["dependencies"])
  for extra in ("serve", "tfds", "plots", "test"):
    locked += project["optional-dependencies"][extra]
  unpinned = {_name(r) for r in locked if not r.startswith("jaxrec[")} - set(pins)
  assert not unpinned, f"run `make lock`: requirements.lock lacks {sorted(unpinned)}"


def test_core_modules_import_without_the_extras():
  """Every jaxrec module imports with the extras' packages missing: what needs one imports it
  inside the function that uses it (and says which extra to install)."""
  code = f"""
import importlib, importlib.abc, pkgutil, sys
BLOCKED = {EXTRA_MODULES!r}

class Missing(importlib.abc.MetaPathFinder):
  def find_spec(self, name, path=None, target=None):
    if name.split(".")[0] in BLOCKED:
      raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)

sys.meta_path.insert(0, Missing())
import jaxrec
for module in pkgutil.walk_packages(jaxrec.__path__, "jaxrec."):
  importlib.import_module(module.name)
"""
  result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
  assert result.returncode == 0, result.stderr[-3000:]


def _block(monkeypatch, *modules):
  for module in modules:
    monkeypatch.setitem(sys.modules, module, None)


def test_missing_plots_extra_is_a_user_error(monkeypatch, tmp_path):
  from jaxrec.eval.simulation.days import plot_days
  _block(monkeypatch, "matplotlib", "matplotlib.pyplot")
  with pytest.raises(UserError, match=r"pip install 'jaxrec\[plots\]'"):
    plot_days({"p": [{"day": 0}]}, str(tmp_path / "days.png"))


def test_missing_tfds_extra_is_a_user_error(monkeypatch, tmp_path):
  from jaxrec.data.tfds_movielens import load_tfds_movielens
  _block(monkeypatch, "tensorflow_datasets")
  with pytest.raises(UserError, match=r"pip install 'jaxrec\[tfds\]'"):
    load_tfds_movielens("movielens-1m", str(tmp_path))


def test_missing_serve_extra_is_a_user_error(monkeypatch, tmp_path, capsys):
  from jaxrec import cli
  monkeypatch.delitem(sys.modules, "serving.app", raising=False)
  _block(monkeypatch, "uvicorn", "fastapi")
  assert cli.main(["serve", "--export", str(tmp_path)]) == 2
  assert "pip install 'jaxrec[serve]'" in capsys.readouterr().err
