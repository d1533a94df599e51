"""The house's arrows point down: which package may import which, no import cycles, and the
server and retrieval import no TensorFlow.

Every import counts, at module top or inside a function: an import hidden in a function to dodge
a cycle is still a cycle.
"""

import ast
import json
import os
import subprocess
import sys


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE = {"jaxrec.errors", "jaxrec.config", "jaxrec.grouping"}

# Layer -> the layers it may import (besides itself and BASE). From the top: the HTTP job and the
# CLI; the serving pipeline over a bundle and training; then evaluation, retrieval, re-ranking and
# the closed-form baselines; then models and data; then the mesh.
ALLOWED = {
    "serving": {"jaxrec.serve", "jaxrec.eval", "jaxrec.retrieval", "jaxrec.rerank", "jaxrec.data"},
    "jaxrec.cli": {"serving", "jaxrec.serve", "jaxrec.train", "jaxrec.eval", "jaxrec.retrieval",
                   "jaxrec.rerank", "jaxrec.baselines", "jaxrec.models", "jaxrec.data",
                   "jaxrec.parallel"},
    "jaxrec.serve": {"jaxrec.train", "jaxrec.eval", "jaxrec.retrieval", "jaxrec.rerank",
                     "jaxrec.models", "jaxrec.data", "jaxrec.parallel"},
    "jaxrec.train": {"jaxrec.eval", "jaxrec.retrieval", "jaxrec.baselines", "jaxrec.models",
                     "jaxrec.data", "jaxrec.parallel"},
    "jaxrec.eval": {"jaxrec.retrieval", "jaxrec.rerank", "jaxrec.data"},
    "jaxrec.baselines": {"jaxrec.eval", "jaxrec.data"},
    "jaxrec.retrieval": {"jaxrec.data"},
    "jaxrec.rerank": set(),
    "jaxrec.models": {"jaxrec.data", "jaxrec.parallel"},
    "jaxrec.data": set(),
    "jaxrec.parallel": set(),
    "jaxrec": set(),
    **{base: set() for base in BASE},
}


def _modules() -> dict[str, str]:
  modules = {}
  for package in ("jaxrec", "serving"):
    for folder, _, files in os.walk(os.path.join(ROOT, package)):
      for name in files:
        if name.endswith(".py"):
          path = os.path.join(folder, name)
          module = os.path.relpath(path, ROOT)[:-3].replace(os.sep, ".")
          modules[module.removesuffix(".__init__")] = path
  return modules


MODULES = _modules()
PACKAGES = {m.rpartition(".")[0] for m in MODULES} | {"jaxrec", "serving"}


def _target(name: str) -> str | None:
  """The project module an imported name lives in (a package's __init__ for a bare package)."""
  while name and name not in MODULES and name not in PACKAGES:
    name = name.rpartition(".")[0]
  return name or None


def _imports(path: str) -> set[str]:
  names = set()
  for node in ast.walk(ast.parse(open(path).read())):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
      # `from jaxrec.data import pipelines` imports the module jaxrec.data.pipelines.
      names.update(f"{node.module}.{alias.name}" for alias in node.names)
  return {t for n in names if n.split(".")[0] in ("jaxrec", "serving") if (t := _target(n))}


GRAPH = {module: _imports(path) - {module} for module, path in MODULES.items()}


def layer(module: str) -> str:
  parts = module.split(".")
  if parts[0] == "serving" or module in BASE:
    return parts[0] if parts[0] == "serving" else module
  return "jaxrec" if len(parts) == 1 else f"jaxrec.{parts[1]}"


def test_every_layer_is_in_the_table():
  assert {layer(m) for m in MODULES} <= set(ALLOWED)


def test_imports_point_down():
  upward = sorted(f"{a} -> {b}" for a, targets in GRAPH.items() for b in targets
                  if layer(b) != layer(a) and layer(b) not in BASE
                  and layer(b) not in ALLOWED[layer(a)])
  assert not upward, "imports against the layering (tests/test_layering.py ALLOWED):\n" + \
      "\n".join(upward)


def test_no_import_cycles():
  index, low, stack, on_stack, cycles = {}, {}, [], set(), []

  def visit(v):  # Tarjan's strongly connected components
    index[v] = low[v] = len(index)
    stack.append(v)
    on_stack.add(v)
    for w in GRAPH.get(v, ()):
      if w not in index:
        visit(w)
        low[v] = min(low[v], low[w])
      elif w in on_stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      component = []
      while True:
        w = stack.pop()
        on_stack.discard(w)
        component.append(w)
        if w == v:
          break
      if len(component) > 1:
        cycles.append(sorted(component))

  for module in GRAPH:
    if module not in index:
      visit(module)
  assert not cycles, f"import cycles: {cycles}"


def test_the_checker_sees_upward_and_hidden_imports(tmp_path):
  """The checks above can fail: an upward import inside a function is caught."""
  path = tmp_path / "m.py"
  path.write_text("def f():\n  from jaxrec.train.trainer import train\n")
  assert "jaxrec.train.trainer" in _imports(str(path))
  assert layer("jaxrec.train.trainer") not in ALLOWED["jaxrec.models"]


LIGHT_MODULES = ["jaxrec.retrieval.index", "jaxrec.retrieval.bundle", "jaxrec.serve.recommender",
                 "serving.app"]


def test_serving_and_retrieval_import_no_tensorflow():
  """One fresh process (a process per module paid a JAX import each) imports the modules one by
  one, lower layers first, and after each lists the heavy packages loaded so far, so the first
  module that pulls one in is the one named. None may load any: the order cannot hide one."""
  code = ("import importlib, json, sys\n"
          f"for module in {LIGHT_MODULES!r}:\n"
          "  importlib.import_module(module)\n"
          "  print(json.dumps([module, [m for m in ('tensorflow', 'keras', 'clu', "
          "'tensorflow_datasets', 'matplotlib') if m in sys.modules]]))\n")
  out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                       check=True).stdout.splitlines()
  loaded = [json.loads(line) for line in out]
  assert [module for module, _ in loaded] == LIGHT_MODULES
  for module, heavy in loaded:
    assert heavy == [], f"importing {module} loads {heavy}"
