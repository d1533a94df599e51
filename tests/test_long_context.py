"""Long-context configs: a >= 4,096-token config exists, and the foundation model's whole train step
(not only the attention) plans memory that grows linearly with the context."""

import os
import sys

import pytest

from jaxrec.config import load_config
from jaxrec.train.defaults import long_context_foundation_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))


@pytest.mark.parametrize("name,min_len", [("synthetic_foundation_4096.py", 4096),
                                          ("synthetic_long_foundation.py", 2048),
                                          ("synthetic_long_sasrec.py", 200)])
def test_long_history_configs_load(name, min_len):
  config = load_config(os.path.join(ROOT, "configs", name))
  assert config.model.max_len >= min_len
  assert config.data.dataset == "synthetic-long"
  if config.task == "foundation":
    assert config.model.window is not None and config.model.window < config.model.max_len
  # The same tokens per training step at every context length.
  assert 10_000 <= config.train.batch_size * config.model.max_len <= 20_000


@pytest.mark.slow
def test_foundation_train_step_memory_grows_linearly(tmp_path):
  from foundation_long_context import train_step_memory

  def peak(length, window):
    config = long_context_foundation_config(length)
    config.data.synthetic.update(num_users=8, min_events=300, mean_extra_events=0,
                                 num_topics=8, interests_per_user=4, items_per_style=5)
    config.data.dir = str(tmp_path / "long")
    config.model.update(dim=16, mlp_dim=32, num_layers=1, window=window, chunk=32,
                        num_global=4 if window else 0)
    config.train.batch_size = 2
    config.lock()
    return train_step_memory(config)["temp_bytes"]

  local = [peak(n, 32) for n in (128, 512)]
  assert local[1] / local[0] <= 4.4, local   # 4x the context
  # (tests/test_local_attention.py shows the dense path's quadratic growth on the same measure.)


def test_resume_keeps_a_run_made_before_an_option_was_added():
  """--resume compares an earlier run's config with the planned one: an option added since (at
  the planned value) and where the data was cached do not make it a different run; any option
  the earlier run had that differs does."""
  from foundation_long_context import same_run

  planned = {"data": {"dir": "/clone/data", "dataset": "synthetic-long"},
             "loss": {"name": "ce", "future_weight": 0.0}, "seed": 0}
  earlier = {"data": {"dir": "/work/data", "dataset": "synthetic-long"},
             "loss": {"name": "ce"}, "seed": 0}
  assert same_run(earlier, planned)
  assert not same_run({**earlier, "seed": 1}, planned)
  assert not same_run({**earlier, "loss": {"name": "sampled_softmax"}}, planned)
  assert not same_run({**earlier, "data": {"dir": "/work/data", "dataset": "synthetic"}}, planned)
