"""Cold start through metadata: the foundation model on items first seen after the training cut-off,
beside popularity by training counts and by the counts known when the test period starts."""

import os

import numpy as np
import pytest

from jaxrec.config import apply_overrides, load_config
from jaxrec.data.prepare import PrepareOptions, prepare
from jaxrec.data.synthetic import SyntheticConfig, generate
from jaxrec.eval.metrics.cold_start import cold_items, cold_start_report, counts_before, rank_scores
from jaxrec.train.restore import restore_model
from jaxrec.train.trainer import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def catalogue_growing(tmp_path_factory):
  """A log during which 30% of the items are released, split by global time."""
  raw = generate(SyntheticConfig(num_users=300, num_items=400, num_events=60_000,
                                 new_item_fraction=0.3, seed=1))
  return prepare(raw, str(tmp_path_factory.mktemp("cold") / "synthetic"),
                 PrepareOptions(split="temporal", split_times=(0.7, 0.85)))


def test_counts_before_a_split_add_the_validation_tokens(catalogue_growing):
  ds = catalogue_growing
  np.testing.assert_array_equal(counts_before(ds, "valid"), ds.item_counts)
  expected = np.zeros(ds.num_items, np.int64)
  for record, tokens in enumerate(ds.user_tokens(np.arange(ds.num_users) + 2)):
    for item in tokens["item"][:ds.splits.valid_end[record]]:
      expected[item] += 1
  np.testing.assert_array_equal(counts_before(ds, "test"), expected)
  # Some items with no training tokens were seen in the validation period: recent popularity
  # can rank them, training popularity cannot.
  assert (expected[cold_items(ds) > 0] > 0).any()


@pytest.mark.slow
def test_foundation_cold_start_report(catalogue_growing, tmp_path):
  config = load_config(os.path.join(ROOT, "configs", "movielens_foundation.py:smoke"))
  config = apply_overrides(config, [f"data.dir={catalogue_growing.path}", "data.dataset=synthetic",
                                    "train.num_steps=6", "eval.ks=10,50"])
  train(config, str(tmp_path / "run"))
  run = restore_model(str(tmp_path / "run"))
  report = cold_start_report(run, "test")
  assert report["cold_items"] > 0 and report["users"] > 0
  assert report["popularity"]["recall@50"] == 0  # a never-trained item has no count to rank by
  assert report["recent_popularity"]["num_users"] == report["users"]
  for name in ("model", "metadata_popularity", "genre_profile", "recent_genre_profile"):
    full, among = report[name], report[f"{name}_among_new_items"]
    assert full["num_users"] == among["num_users"] == report["users"]
    for k in (10, 50):
      # Fewer items to beat: a new target ranks at least as high among the new items only.
      assert full[f"recall@{k}"] <= among[f"recall@{k}"] <= 1
  assert report["random"]["recall@50"] == 50 / (run.task.data.num_items - 2)
  spread = report["new_targets"]
  assert spread["users"] == report["users"]
  assert 1 <= spread["distinct_items"] <= min(spread["users"], report["cold_items"])
  assert 0 < spread["top5_items_share"] <= 1
  assert report["random_among_new_items"]["recall@50"] == min(1.0, 50 / report["cold_items"])


def test_rank_scores_weights_rows_and_restricts_the_ranking(catalogue_growing, tmp_path):
  """The harness every cold-start number goes through: a scorer that knows the answer hits it,
  and `among` removes every other item from the ranking."""
  import jax.numpy as jnp
  from jaxrec.train.sequential import SequentialTask
  config = load_config(os.path.join(ROOT, "configs", "movielens_sasrec.py:smoke"))
  config = apply_overrides(config, [f"data.dir={catalogue_growing.path}", "data.dataset=synthetic",
                                    "eval.ks=10,50"])
  task = SequentialTask(config)
  cold = cold_items(task.data)
  only_cold = lambda batch: cold[np.asarray(batch["targets"])[:, 0]]
  num_items = task.data.num_items
  oracle = lambda batch: jnp.zeros((batch["targets"].shape[0], num_items)).at[
      jnp.arange(batch["targets"].shape[0]), batch["targets"][:, 0]].set(1.0)
  hit = rank_scores(task, "valid", oracle, only_cold)  # a cold item is in no training history
  assert hit["num_users"] > 0 and hit["recall@10"] == 1.0
  # Ranking only warm items, no cold target can be hit.
  warm_only = rank_scores(task, "valid", oracle, only_cold, among=1 - cold)
  assert warm_only["recall@50"] == 0.0 and warm_only["num_users"] == hit["num_users"]
