import json
import textwrap

import ml_collections
import pytest

from jaxrec.config import apply_overrides, load_config, save_config, split_overrides, to_dict
from jaxrec.errors import UserError

_CONFIG = """
import ml_collections

def get_config(arg=None):
  c = ml_collections.ConfigDict()
  c.seed = 0
  c.name = "sasrec"
  c.fast = False
  c.extra = None
  c.train = ml_collections.ConfigDict()
  c.train.num_steps = 420
  c.train.learning_rate = 2e-3
  c.train.ks = (10, 20)
  c.train.axes = ("data", "model")
  c.train.shape = [-1, 1]
  c.train.rates = (0.5, 0.25)
  c.train.rules = ml_collections.ConfigDict({"vocab": "model", "embed": None})
  if arg == "smoke":
    c.train.num_steps = 6
  elif arg is not None:
    raise ValueError(f"unknown arg {arg!r}")
  return c
"""


def _write(tmp_path, text, name="exp.py"):
  path = tmp_path / name
  path.write_text(textwrap.dedent(text))
  return str(path)


@pytest.fixture
def config(tmp_path):
  return load_config(_write(tmp_path, _CONFIG))


def _error(fn, *args) -> str:
  with pytest.raises(UserError) as e:
    fn(*args)
  return str(e.value)


# load_config


def test_load_without_and_with_arg(tmp_path):
  path = _write(tmp_path, _CONFIG)
  config = load_config(path)
  assert config.train.num_steps == 420 and config.is_locked
  assert load_config(f"{path}:smoke").train.num_steps == 6


def test_load_without_arg_calls_get_config_without_arguments(tmp_path):
  path = _write(tmp_path, """
      import ml_collections
      def get_config():
        return ml_collections.ConfigDict({"a": 1})
  """)
  assert load_config(path).a == 1
  message = _error(load_config, f"{path}:smoke")
  assert "takes no argument" in message and "get_config(arg=None)" in message


def test_two_files_with_the_same_name_do_not_collide(tmp_path):
  (tmp_path / "a").mkdir()
  (tmp_path / "b").mkdir()
  a = _write(tmp_path / "a", "import ml_collections\ndef get_config():\n"
             "  return ml_collections.ConfigDict({'x': 1})\n", "same.py")
  b = _write(tmp_path / "b", "import ml_collections\ndef get_config():\n"
             "  return ml_collections.ConfigDict({'x': 2})\n", "same.py")
  assert (load_config(a).x, load_config(b).x) == (1, 2)


def test_load_errors(tmp_path):
  assert "not found" in _error(load_config, str(tmp_path / "missing.py"))
  (tmp_path / "exp.json").write_text("{}")
  assert "not a Python file" in _error(load_config, str(tmp_path / "exp.json"))
  assert "defines no get_config" in _error(load_config, _write(tmp_path, "x = 1\n", "none.py"))
  message = _error(load_config, _write(tmp_path, "import no_such_module_xyz\n", "bad.py"))
  assert "importing config file" in message and "no_such_module_xyz" in message
  message = _error(load_config, _write(tmp_path, _CONFIG) + ":smok")
  assert "get_config('smok')" in message and "unknown arg 'smok'" in message
  path = _write(tmp_path, "def get_config():\n  return {'a': 1}\n", "plain.py")
  message = _error(load_config, path)
  assert "returned dict" in message and "ConfigDict" in message


# split_overrides


def test_split_overrides_both_forms_in_order():
  argv = ["train", "--config.train.num_steps=10", "--workdir", "w", "--config.seed", "3",
          "--config.train.ks=5,10"]
  rest, overrides = split_overrides(argv)
  assert rest == ["train", "--workdir", "w"]
  assert overrides == ["train.num_steps=10", "seed=3", "train.ks=5,10"]


def test_split_overrides_leaves_the_config_file_flag():
  rest, overrides = split_overrides(["--config", "configs/x.py:smoke", "--config.seed=1"])
  assert (rest, overrides) == (["--config", "configs/x.py:smoke"], ["seed=1"])
  rest, overrides = split_overrides(["--config=configs/x.py", "--config.seed", "-1"])
  assert (rest, overrides) == (["--config=configs/x.py"], ["seed=-1"])


def test_split_overrides_missing_value_is_reported_by_apply(config):
  _, overrides = split_overrides(["--config.seed", "--workdir", "w"])
  assert overrides == ["seed"]
  assert "--config.KEY=VALUE" in _error(apply_overrides, config, overrides)


# apply_overrides


def test_apply_scalars(config):
  apply_overrides(config, ["seed=7", "name=gru4rec", "train.learning_rate=1e-3",
                           "train.num_steps=12"])
  assert (config.seed, config.name) == (7, "gru4rec")
  assert (config.train.learning_rate, config.train.num_steps) == (1e-3, 12)
  apply_overrides(config, ["train.learning_rate=1"])
  assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
  apply_overrides(config, ["name=", "name=a=b"])  # str takes the text as is, after the first '='
  assert config.name == "a=b"


@pytest.mark.parametrize("text,value", [("true", True), ("False", False), ("1", True),
                                        ("0", False), ("YES", True), ("no", False)])
def test_apply_bool(config, text, value):
  apply_overrides(config, [f"fast={text}"])
  assert config.fast is value


def test_apply_sequences(config):
  apply_overrides(config, ["train.ks=(1, 5)", "train.axes=batch,model", "train.shape=4,2"])
  assert config.train.ks == (1, 5)
  assert config.train.axes == ("batch", "model")
  assert config.train.shape == [4, 2]
  apply_overrides(config, ["train.ks=10,20,50", "train.ks=[3]", "train.ks=7", "train.rates=1,0.5"])
  assert config.train.ks == (7,) and config.train.rates == (1.0, 0.5)
  apply_overrides(config, ["train.axes=('x',)"])
  assert config.train.axes == ("x",)


def test_apply_none_fields(config):
  apply_overrides(config, ["extra=3", "train.rules.embed=model"])
  assert config.extra == 3 and config.train.rules.embed == "model"


def test_apply_returns_the_config_and_keeps_it_locked(config):
  assert apply_overrides(config, []) is config
  assert config.is_locked


def test_unknown_key_names_it_and_suggests(config):
  message = _error(apply_overrides, config, ["train.num_step=5"])
  assert message.startswith("config.train.num_step does not exist; "
                            "did you mean config.train.num_steps?")
  assert "Keys in config.train: axes, ks, learning_rate" in message
  message = _error(apply_overrides, config, ["trian.num_steps=5"])
  assert "config.trian.num_steps does not exist; did you mean config.train?" in message
  assert "Keys in config: " in message
  message = _error(apply_overrides, config, ["zzzzz=1"])
  assert "did you mean" not in message and "Keys in config:" in message
  assert "not a group" in _error(apply_overrides, config, ["seed.x=1"])


@pytest.mark.parametrize("override,message", [
    ("train.num_steps=abc", "--config.train.num_steps expects an int, got 'abc'"),
    ("train.num_steps=1.5", "--config.train.num_steps expects an int, got '1.5'"),
    ("train.learning_rate=fast", "--config.train.learning_rate expects a float, got 'fast'"),
    ("fast=maybe", "--config.fast expects a bool (true/false), got 'maybe'"),
    ("train.ks=10,x", "--config.train.ks expects a tuple of int"),
    ("train.ks=('a', 'b')", "--config.train.ks expects a tuple of int"),
])
def test_wrong_type_messages(config, override, message):
  assert message in _error(apply_overrides, config, [override])


def test_group_cannot_be_overwritten_and_malformed_overrides(config):
  message = _error(apply_overrides, config, ["train=3"])
  assert "--config.train is a group" in message and "num_steps" in message
  for bad in ["train.num_steps", ".seed=1", "train..ks=1", "=1"]:
    assert "expected --config.KEY=VALUE" in _error(apply_overrides, config, [bad])


# to_dict / save_config


def test_save_config_round_trip(config, tmp_path):
  apply_overrides(config, ["train.num_steps=9"])
  path = tmp_path / "run" / "config.json"
  save_config(config, str(path))
  text = path.read_text()
  loaded = json.loads(text)
  assert loaded == to_dict(config)
  assert loaded["train"]["num_steps"] == 9 and loaded["train"]["ks"] == [10, 20]
  assert loaded["train"]["rules"] == {"embed": None, "vocab": "model"}
  assert text == json.dumps(loaded, indent=2, sort_keys=True) + "\n"
  assert isinstance(ml_collections.ConfigDict(loaded), ml_collections.ConfigDict)


def test_optional_field_set_to_none_and_back_others_refuse_none():
  # model.window's convention: a typed placeholder, None meaning "full attention".
  config = ml_collections.ConfigDict({
      "window": ml_collections.FieldReference(None, field_type=int), "num_steps": 420})
  config.window = 512
  config.lock()
  apply_overrides(config, ["window=None"])
  assert config.window is None
  apply_overrides(config, ["window=256"])
  assert config.window == 256
  apply_overrides(config, ["window= None"])
  assert config.window is None
  message = _error(apply_overrides, config, ["num_steps=None"])
  assert "--config.num_steps cannot be None" in message and "give an int" in message
  assert config.num_steps == 420
  assert "expects an int, got 'abc'" in _error(apply_overrides, config, ["window=abc"])


# sizes out of range


def _sasrec_smoke():
  import os
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  return load_config(os.path.join(root, "configs", "movielens_sasrec.py:smoke"))


@pytest.mark.parametrize("override, words", [
    ("train.batch_size=0", ["--config.train.batch_size=0", "at least 1", "N >= 1"]),
    ("model.dim=-4", ["--config.model.dim=-4", "embedding width", "N >= 1"]),
    ("train.num_steps=0", ["--config.train.num_steps=0", "untrained model", "N >= 1"]),
    ("eval.batch_size=-1", ["--config.eval.batch_size=-1", "at least 1"]),
    ("eval.ks=10,0", ["--config.eval.ks=(10, 0)", "each element"]),
])
def test_sizes_out_of_range_are_refused_naming_key_value_and_fix(override, words):
  config = _sasrec_smoke()
  key = override.partition("=")[0]
  before = config[key.split(".")[0]][key.split(".")[1]]
  message = _error(apply_overrides, config, [override])
  assert all(w in message for w in words), message
  assert config[key.split(".")[0]][key.split(".")[1]] == before  # refused before it was set


def test_check_config_refuses_values_set_in_the_file_or_by_hand(tmp_path):
  from jaxrec.config import check_config
  config = _sasrec_smoke()
  assert check_config(config) is config
  with config.unlocked():
    config.train.eval_every = 0
  assert "config.train.eval_every=0" in _error(check_config, config)
  path = _write(tmp_path, _CONFIG.replace("c.train.num_steps = 420", "c.train.num_steps = -1"))
  assert "config.train.num_steps=-1" in _error(load_config, path)
  # Optional fields left unset and keys of other sections are not checked.
  assert check_config(ml_collections.ConfigDict({"model": {"window": None}, "other": {"dim": 0}}))


def test_diff_configs_names_changed_added_and_removed_keys():
  from jaxrec.config import ABSENT, diff_configs
  old = {"optimizer": {"learning_rate": 0.002, "b1": 0.9}, "model": {"dim": 16}, "gone": 1}
  new = {"optimizer": {"learning_rate": 0.01, "b1": 0.9}, "model": {"dim": 16, "new": 2}}
  assert diff_configs(old, new) == {"gone": (1, ABSENT), "model.new": (ABSENT, 2),
                                    "optimizer.learning_rate": (0.002, 0.01)}
  assert diff_configs(old, old) == {}


def test_zero_steps_are_accepted_only_for_a_warm_start():
  """A warm start may run 0 steps (it evaluates the earlier model as is on today's data), in
  either order of the overrides; a fresh run may not."""
  for overrides in (["train.init_from=/runs/earlier", "train.num_steps=0"],
                    ["train.num_steps=0", "train.init_from=/runs/earlier"]):
    assert apply_overrides(_sasrec_smoke(), overrides).train.num_steps == 0
  assert "N >= 1" in _error(apply_overrides, _sasrec_smoke(), ["train.num_steps=0"])
