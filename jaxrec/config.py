"""Experiment configs: Python files with `get_config(arg=None)`, plus `--config.a.b=v` overrides.

The convention of flax examples and big_vision: `configs/movielens_sasrec.py:smoke` imports the
file and calls `get_config("smoke")`. Overrides are applied to the locked config, so a misspelt
key is an error instead of a silently ignored new field.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import inspect
import itertools
import json
import os
import sys

import ml_collections

from jaxrec.errors import UserError

_PREFIX = "--config."
_FORM = "--config.KEY=VALUE (or --config.KEY VALUE), e.g. --config.train.num_steps=1000"
# Each loaded file gets its own module name: two configs both named `common.py` must not collide.
_counter = itertools.count()


def load_config(spec: str) -> ml_collections.ConfigDict:
  """Imports `path.py` (or `path.py:arg`) and returns its `get_config([arg])`, locked."""
  path, arg = _split_spec(spec)
  if not os.path.isfile(path):
    raise UserError(f"config file {path!r} not found; pass --config path/to/config.py "
                    "(optionally path/to/config.py:arg)")
  if not path.endswith(".py"):
    raise UserError(f"config file {path!r} is not a Python file; a config is a .py file that "
                    "defines get_config(arg=None) returning an ml_collections.ConfigDict")
  module = _import(path)
  get_config = getattr(module, "get_config", None)
  if not callable(get_config):
    raise UserError(f"config file {path!r} defines no get_config(); add "
                    "`def get_config(arg=None):` returning an ml_collections.ConfigDict")
  args = () if arg is None else (arg,)
  if args and not _accepts(get_config, arg):
    raise UserError(f"get_config() in {path!r} takes no argument, so {arg!r} cannot be passed; "
                    f"drop ':{arg}' from --config or define get_config(arg=None)")
  call = f"get_config({arg!r})" if args else "get_config()"
  try:
    config = get_config(*args)
  except Exception as e:
    raise UserError(f"{call} in {path!r} failed: {type(e).__name__}: {e}") from e
  if not isinstance(config, ml_collections.ConfigDict):
    raise UserError(f"{call} in {path!r} returned {type(config).__name__}, not an "
                    "ml_collections.ConfigDict; return ml_collections.ConfigDict(...) instead")
  config.lock()
  return check_config(config)


def _split_spec(spec: str) -> tuple[str, str | None]:
  # Split at the first ".py:" so the arg itself may contain colons ("x.py:res=224,variant=B:16").
  path, sep, arg = spec.partition(".py:")
  if not sep:
    return spec, None
  return path + ".py", (arg or None)


def _import(path: str):
  name = f"_jaxrec_config_{next(_counter)}_{os.path.splitext(os.path.basename(path))[0]}"
  spec = importlib.util.spec_from_file_location(name, path)
  module = importlib.util.module_from_spec(spec)
  # Registered so that dataclasses and pickling inside the config file can find their module.
  sys.modules[name] = module
  try:
    spec.loader.exec_module(module)
  except Exception as e:
    del sys.modules[name]
    raise UserError(f"importing config file {path!r} failed: {type(e).__name__}: {e}") from e
  return module


def _accepts(fn, arg) -> bool:
  try:
    inspect.signature(fn).bind(arg)
  except TypeError:
    return False
  except ValueError:  # no signature available (a builtin): let the call itself decide
    return True
  return True


def split_overrides(argv: list[str]) -> tuple[list[str], list[str]]:
  """Pulls `--config.a.b=v` and `--config.a.b v` out of argv: (rest, ["a.b=v", ...])."""
  rest, overrides = [], []
  i = 0
  while i < len(argv):
    token = argv[i]
    if token == "--":  # everything after "--" is positional, never an override
      rest.extend(argv[i:])
      break
    if not token.startswith(_PREFIX):  # includes "--config file.py" and "--config=file.py"
      rest.append(token)
    elif "=" in token:
      overrides.append(token[len(_PREFIX):])
    elif i + 1 < len(argv) and not argv[i + 1].startswith("--"):
      overrides.append(f"{token[len(_PREFIX):]}={argv[i + 1]}")
      i += 1
    else:  # no value follows; kept without "=" so apply_overrides reports the expected form
      overrides.append(token[len(_PREFIX):])
    i += 1
  return rest, overrides


def apply_overrides(config: ml_collections.ConfigDict,
                    overrides: list[str]) -> ml_collections.ConfigDict:
  """Sets each "a.b.c=value" in place, parsing the text against the field's current type."""
  for override in overrides:
    key, sep, text = override.partition("=")
    parts = key.split(".")
    if not sep or not all(parts):
      raise UserError(f"malformed override --config.{override}; expected {_FORM}")
    parent = _walk(config, parts)
    name = parts[-1]
    flag = f"--config.{key}"
    if isinstance(parent[name], ml_collections.ConfigDict):
      raise UserError(f"{flag} is a group of settings and cannot be set to {text!r}; set its keys "
                      f"one by one, e.g. {flag}.{_first_key(parent[name])}=... "
                      f"(keys: {', '.join(sorted(parent[name].keys()))})")
    value = _parse(text, parent[name], parent.get_type(name), flag, _optional(parent, name))
    _check_value(key, value, flag, warm_start=_warm_start(config) or any(
        o.partition("=")[0] == "train.init_from" and o.partition("=")[2] for o in overrides))
    try:
      setattr(parent, name, value)
    except (TypeError, ValueError) as e:
      raise UserError(f"{flag} cannot be set to {text!r}: {e}") from e
  return config


def _walk(config: ml_collections.ConfigDict, parts: list[str]) -> ml_collections.ConfigDict:
  """The ConfigDict holding the last key of `parts`, after checking every key on the way exists."""
  node, where = config, "config"
  for i, part in enumerate(parts):
    if not isinstance(node, ml_collections.ConfigDict):
      raise UserError(f"{where} is a {type(node).__name__}, not a group of settings, so "
                      f"config.{'.'.join(parts)} does not exist; set {where} itself instead")
    if part not in node:
      keys = sorted(node.keys())
      close = difflib.get_close_matches(part, keys, n=1)
      hint = f"; did you mean {where}.{close[0]}?" if close else "."
      raise UserError(f"config.{'.'.join(parts)} does not exist{hint} "
                      f"Keys in {where}: {', '.join(keys)}")
    if i == len(parts) - 1:
      return node
    node, where = node[part], f"{where}.{part}"


def _first_key(group: ml_collections.ConfigDict) -> str:
  return sorted(group.keys())[0] if group.keys() else "KEY"


def _optional(parent: ml_collections.ConfigDict, name: str) -> bool:
  """Whether a field may be None: declared as a typed placeholder,
  `ml_collections.FieldReference(None, field_type=int)` (e.g. model.window: None = full
  attention), or None right now. ConfigDict keeps such a field as its FieldReference object
  whatever value it holds, so it stays optional after an int was set (and back)."""
  return (parent[name] is None
          or isinstance(parent._fields.get(name), ml_collections.FieldReference))  # noqa: SLF001


def _parse(text: str, current, field_type: type, flag: str, optional: bool = False):
  if field_type is type(None):
    return _literal_or_text(text)
  if text.strip() == "None":
    if optional:
      return None
    raise UserError(f"{flag} cannot be None: it is not an optional setting "
                    f"(it holds {current!r}); give {_NAMES.get(field_type, field_type.__name__)}")
  if field_type in (tuple, list):
    return _parse_sequence(text, current, field_type, flag)
  return _parse_scalar(text, field_type, flag)


_TRUE, _FALSE = ("true", "1", "yes"), ("false", "0", "no")
_NAMES = {bool: "a bool (true/false)", int: "an int", float: "a float", str: "a str"}


def _parse_scalar(text: str, field_type: type, flag: str):
  what = _NAMES.get(field_type, f"a {field_type.__name__}")
  if field_type is bool:
    if text.strip().lower() in _TRUE + _FALSE:
      return text.strip().lower() in _TRUE
    raise UserError(f"{flag} expects {what}, got {text!r}")
  if field_type is str:
    return text
  if field_type in (int, float):
    try:
      return field_type(text)
    except ValueError:
      raise UserError(f"{flag} expects {what}, got {text!r}") from None
  # Any other type: the Python literal, type-checked when ml_collections stores it.
  return _literal_or_text(text)


def _parse_sequence(text: str, current, field_type: type, flag: str):
  what = f"a {field_type.__name__}"
  element_type = _element_type(current)
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = None
  if isinstance(value, (tuple, list)):
    items = list(value)
    if element_type is not None:
      items = [_check_element(x, element_type, flag, what, text) for x in items]
  else:
    # A bare "10,20" or "data,model": each piece parsed like the existing first element.
    pieces = [p.strip() for p in text.split(",")] if text.strip() else []
    if element_type is None:
      items = [_literal_or_text(p) for p in pieces]
    else:
      try:
        items = [_parse_scalar(p, element_type, flag) for p in pieces]
      except UserError:
        raise UserError(f"{flag} expects {what} of {element_type.__name__}, e.g. "
                        f"{_example(current)}, got {text!r}") from None
  return field_type(items)


def _element_type(current) -> type | None:
  """The type of the existing elements when they share one; None means anything goes."""
  if not current:
    return None
  types = {type(x) for x in current}
  return types.pop() if len(types) == 1 else None


def _check_element(x, element_type: type, flag: str, what: str, text: str):
  if type(x) is element_type:
    return x
  if element_type is float and type(x) is int:
    return float(x)
  raise UserError(f"{flag} expects {what} of {element_type.__name__}, got {text!r}")


def _example(current) -> str:
  return ",".join(str(x) for x in current)


def _literal_or_text(text: str):
  try:
    return ast.literal_eval(text)
  except (ValueError, SyntaxError):
    return text


# Sizes and counts with a least sensible value: key (dotted, from the config's root) -> (minimum,
# what the setting is, what a value below it would do). A key is checked in every config that has
# it (the tasks' configs differ in sections); a tuple (model.top, eval.ks) element by element;
# None (an optional field such as model.window) is left alone. Beyond these, a value the code
# cannot use is the model's or the pipeline's to refuse.
_MINIMUMS = {
    "train.batch_size": (1, "the examples per training step", ""),
    "train.num_steps": (1, "the number of training steps",
                        "0 would train nothing and report an untrained model's metrics; only a "
                        "warm start (train.init_from) may run 0 steps, to evaluate it as is"),
    "train.log_every": (1, "the steps between training-loss logs", ""),
    "train.eval_every": (1, "the steps between validation evaluations", ""),
    "train.keep_checkpoints": (1, "the latest checkpoints kept", ""),
    "train.max_nonfinite_in_a_row": (1, "the non-finite steps tolerated in a row", ""),
    "train.patience": (0, "the evaluations without improvement before stopping (0 = never stop)",
                       ""),
    "eval.batch_size": (1, "the users per evaluation batch", ""),
    "eval.ks": (1, "each cut-off k of the ranking metrics", ""),
    "eval.max_targets": (0, "the held-out items per user (0 = every item of the window)", ""),
    "eval.sampled_negatives": (0, "the sampled protocol's negatives (0 = off)", ""),
    "model.dim": (1, "the model's embedding width", ""),
    "model.max_len": (1, "the history length the model reads", ""),
    "model.num_layers": (1, "the model's layers", ""),
    "model.num_heads": (1, "the attention heads", ""),
    "model.mlp_dim": (1, "the feed-forward width", ""),
    "model.hidden": (1, "the hidden width", ""),
    "model.title_buckets": (1, "the hashed title buckets", ""),
    "model.window": (1, "the attention window (None = full attention)", ""),
    "model.num_global": (0, "the attention-sink tokens", ""),
    "model.chunk": (1, "the queries per attention chunk", ""),
    "model.bottom": (1, "each bottom MLP width", ""),
    "model.top": (1, "each top MLP width", ""),
    "model.cross_layers": (0, "the cross layers", ""),
    "model.factors": (1, "the latent factors", ""),
    "model.iterations": (1, "the fitting iterations", ""),
    "model.cg_steps": (1, "the conjugate-gradient steps", ""),
    "model.k_neighbors": (1, "the neighbours kept", ""),
    "loss.num_negatives": (1, "the sampled negatives per example", ""),
    "loss.positions_per_user": (1, "the positions trained per user", ""),
    "loss.uniform_negatives": (0, "the uniform negatives per batch (0 = off)", ""),
    "loss.horizon": (1, "the items ahead predicted", ""),
    "loss.future_window": (1, "the tokens ahead the future objective draws from", ""),
    "optimizer.warmup_steps": (0, "the warm-up steps", ""),
    "data.kcore": (0, "the k-core filter (0 = off)", ""),
    "data.merge_gap": (0, "the merge gap in seconds", ""),
    "data.negatives_per_positive": (0, "the sampled unrated items per rating", ""),
}


def check_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Refuses sizes and counts out of range (batch sizes, widths, steps; see _MINIMUMS) with a
  UserError naming the key, the value and the fix. load_config, apply_overrides (for each key it
  sets) and train() call it, so a bad value stops the run before anything is built."""
  for key in _MINIMUMS:
    node = config
    for part in key.split("."):
      if not isinstance(node, (ml_collections.ConfigDict, dict)) or part not in node:
        break
      node = node[part]
    else:
      _check_value(key, node, f"config.{key}", warm_start=_warm_start(config))
  return config


def _warm_start(config) -> bool:
  train = config.get("train") if isinstance(config, (ml_collections.ConfigDict, dict)) else None
  return bool(train and train.get("init_from"))


def _check_value(key: str, value, flag: str, warm_start: bool = False) -> None:
  """Refuses a value below its key's minimum. A warm start may run zero steps: it evaluates the
  earlier run's model as is on today's data (benchmarks/foundation_incremental.py's "as is")."""
  rule = _MINIMUMS.get(key)
  if rule is None or value is None:
    return
  minimum, what, consequence = rule
  if key == "train.num_steps" and warm_start:
    minimum, consequence = 0, ""
  for v in value if isinstance(value, (tuple, list)) else (value,):
    if isinstance(v, bool) or not isinstance(v, (int, float)):
      continue  # a wrong type is ml_collections' (or the model's) to refuse
    if v < minimum:
      shown = value if isinstance(value, (tuple, list)) else v
      why = f" ({consequence})" if consequence else ""
      raise UserError(f"{flag}={shown!r} is out of range: {what} must be at least {minimum}{why}. "
                      f"Pass --config.{key}=N with N >= {minimum}"
                      + (" for each element." if isinstance(value, (tuple, list)) else "."))


def flatten(tree: dict, prefix: str = "") -> dict:
  """{"a.b": v, ...} for a nested dict of plain values (an empty group stays one value, {})."""
  flat = {}
  for k, v in tree.items():
    if isinstance(v, dict) and v:
      flat.update(flatten(v, f"{prefix}{k}."))
    else:
      flat[f"{prefix}{k}"] = v
  return flat


ABSENT = "(absent)"


def diff_configs(old: dict, new: dict) -> dict[str, tuple]:
  """{dotted key: (old value, new value)} for every key whose value differs between two configs
  as config.json keeps them (to_dict form); a key only one side has shows ABSENT on the other."""
  a, b = flatten(old), flatten(new)
  return {k: (a.get(k, ABSENT), b.get(k, ABSENT)) for k in sorted(a.keys() | b.keys())
          if a.get(k, ABSENT) != b.get(k, ABSENT)}


def to_dict(config: ml_collections.ConfigDict) -> dict:
  """A plain dict that json.dump accepts: tuples become lists."""
  return _plain(config.to_dict())


def _plain(value):
  if isinstance(value, dict):
    return {str(k): _plain(v) for k, v in value.items()}
  if isinstance(value, (list, tuple)):
    return [_plain(v) for v in value]
  if value is None or isinstance(value, (bool, int, float, str)):
    return value
  # Anything else (a dtype, a function) is recorded by its text, so saving a config never fails.
  return str(value)


def config_json(config: ml_collections.ConfigDict) -> str:
  """The config as JSON (indent 2, sorted keys), as a run's workdir keeps it."""
  return json.dumps(to_dict(config), indent=2, sort_keys=True) + "\n"


def save_config(config: ml_collections.ConfigDict, path: str) -> None:
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  with open(path, "w") as f:
    f.write(config_json(config))
