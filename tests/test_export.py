import json
import os

import jax
import numpy as np
import pytest
from flax import nnx

from jaxrec import cli
from jaxrec.config import apply_overrides, load_config
from jaxrec.errors import UserError
from jaxrec.retrieval.bundle import latest_version, load_bundle
from jaxrec.retrieval.exact import exact_topk, recall_at_k
from jaxrec.train.export import embeddings, export_workdir
from jaxrec.train.restore import restore_model
from jaxrec.train.trainer import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def two_tower_workdir(smoke_two_tower):
  return smoke_two_tower[0]  # conftest's run, shared with the serving tests


def test_export_load_and_search_like_exact(two_tower_workdir, tmp_path):
  root = str(tmp_path / "exports")
  path, manifest = export_workdir(two_tower_workdir, root)
  assert path == os.path.join(root, "1") and latest_version(root) == path
  bundle = load_bundle(path)
  assert manifest["index"]["exact"] and bundle.manifest["recall"]["recall@100"] == 1.0
  assert bundle.manifest["recall"]["query_source"] == "held_out_queries"
  assert bundle.manifest["metadata"]["source"]["task"] == "two_tower"
  assert bundle.query_encoder_dir and os.path.exists(os.path.join(bundle.vocab_dir, "item.npz"))

  # The bundle's vectors are the checkpoint's: same neighbours as exact search on the model.
  run = restore_model(two_tower_workdir)
  model = nnx.merge(run.graphdef, run.state)
  items = np.asarray(run.task.item_vectors(model))
  np.testing.assert_allclose(bundle.items, items[2:], atol=1e-6)
  batch = next(iter(run.task.eval_batches("test")))
  batch.pop("weight")
  queries = np.asarray(jax.jit(run.task.query_vectors)(model, batch))[:32]
  ids, scores = bundle.search(queries, 20)
  exact_rows, exact_scores = exact_topk(items[2:], queries, 20)
  np.testing.assert_array_equal(ids, exact_rows + 2)
  np.testing.assert_allclose(scores, exact_scores, rtol=1e-5)

  # The saved parameters restore into the model they came from.
  import orbax.checkpoint as ocp
  params = ocp.StandardCheckpointer().restore(os.path.join(bundle.query_encoder_dir, "params"))
  restored = jax.tree.leaves(params)
  assert len(restored) == len(jax.tree.leaves(run.state))
  with open(os.path.join(bundle.query_encoder_dir, "config.json")) as f:
    assert json.load(f)["task"] == "two_tower"

  # The next export is version 2; an existing version is never overwritten.
  path2, manifest2 = export_workdir(two_tower_workdir, root, index_overrides={
      "num_leaves": 20, "num_leaves_to_search": 10, "reorder": 100})
  assert path2.endswith("2") and not manifest2["index"].get("exact")
  # The manifest's recall is the index's against exact search on the validation queries.
  _, queries = embeddings(run)
  approx_ids, _ = load_bundle(path2).search(queries, 10)
  exact_ids, _ = exact_topk(items[2:], queries, 10)
  assert manifest2["recall"]["recall@10"] == pytest.approx(
      recall_at_k(approx_ids - 2, exact_ids, 10), abs=1e-4)
  assert 0.5 < manifest2["recall"]["recall@10"] <= 1
  with pytest.raises(UserError, match="already exists"):
    export_workdir(two_tower_workdir, root, version=1)


def test_export_cli_and_its_errors(two_tower_workdir, tmp_path, capsys):
  root = str(tmp_path / "exports")
  assert cli.main(["export", "--workdir", two_tower_workdir, "--out", root]) == 0
  assert "recall@100 1.000" in capsys.readouterr().out
  assert cli.main(["export", "--workdir", two_tower_workdir, "--out", root, "--exact",
                   "--reorder", "10"]) == 2
  assert "--exact" in capsys.readouterr().err
  assert cli.main(["export", "--workdir", str(tmp_path / "nothing"), "--out", root]) == 2
  assert "not a training workdir" in capsys.readouterr().err


def test_bpr_and_sasrec_export_too(ml100k, smoke_sasrec, tmp_path):
  for name in ("bpr", "sasrec"):
    if name == "sasrec":
      workdir, results = smoke_sasrec  # conftest's run, shared with other modules
    else:
      config = apply_overrides(
          load_config(os.path.join(ROOT, f"configs/movielens_{name}.py:smoke")),
          [f"data.dir={ml100k.path}"])
      workdir = str(tmp_path / name)
      results = train(config, workdir)
    path, manifest = export_workdir(workdir, str(tmp_path / f"{name}-export"))
    bundle = load_bundle(path)
    assert manifest["num_items"] == 1682
    # Retrieval by the bundle reproduces the model's own ranking quality on validation users.
    assert manifest["metadata"]["metrics"]["valid"]["ndcg@10"] == results["valid"]["ndcg@10"]
    assert bundle.items.shape[1] == manifest["metadata"]["query_dim"]


def test_export_tunes_to_a_recall_target_or_exits_2(two_tower_workdir, tmp_path, capsys,
                                                     monkeypatch):
  from jaxrec.retrieval import index
  monkeypatch.setattr(index, "EXACT_BELOW", 100)  # tune a tree over the 1,682 smoke items
  root = str(tmp_path / "exports")
  assert cli.main(["export", "--workdir", two_tower_workdir, "--out", root,
                   "--target-recall", "0.8", "--recall-k", "20", "--max-latency-ms", "1000"]) == 0
  out = capsys.readouterr().out
  assert "held-out validation queries not used for tuning" in out and "ms/query" in out
  bundle = load_bundle(latest_version(root))
  recall = bundle.recall
  assert recall["tuning"]["target_recall"] == 0.8 and recall["tuning"]["recall_k"] == 20
  assert recall["tuning"]["query_source"] == "held_out_queries"
  assert recall["queries"] == recall["tuning"]["held_out_queries"] > 0
  assert recall["tuning"]["tuning_queries"] > 0 and recall["latency_ms_per_query"] > 0
  assert recall["tuning"]["tuning_recall"] >= 0.8 and 0 < recall["recall@20"] <= 1
  assert bundle.manifest["index"]["num_leaves_to_search"] == (
      recall["tuning"]["chosen"]["num_leaves_to_search"])

  # Nothing within the latency cap: exit 2 naming the best recall and what to change.
  assert cli.main(["export", "--workdir", two_tower_workdir, "--out", root,
                   "--max-latency-ms", "0.000001"]) == 2
  err = capsys.readouterr().err
  assert "no index setting reaches recall@100 0.95" in err and "--accept-recall" in err
  assert latest_version(root).endswith("1")  # no bundle written
  assert cli.main(["export", "--workdir", two_tower_workdir, "--out", root,
                   "--target-recall", "0.9", "--accept-recall", "0.95"]) == 2
  assert "accept_recall must be in" in capsys.readouterr().err
