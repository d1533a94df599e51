import json
import os
import shutil

import numpy as np
import pytest

from jaxrec.errors import UserError
from jaxrec.retrieval import bundle as bundle_lib
from jaxrec.retrieval import index as index_lib
from jaxrec.retrieval.bundle import latest_version, load_bundle, write_bundle
from jaxrec.retrieval.exact import exact_topk, exact_topk_jax, recall_at_k
from jaxrec.retrieval.index import (RecallNotMet, ScannParams, build_index, choose_params,
                                    params_for, split_queries)


def clustered(num: int, dim: int, clusters: int, seed: int) -> np.ndarray:
  """L2-normalised mixture of gaussians, like trained item/query embeddings."""
  rng = np.random.default_rng(seed)
  centres = np.random.default_rng(0).standard_normal((clusters, dim))
  x = centres[rng.integers(clusters, size=num)] + 0.5 * rng.standard_normal((num, dim))
  return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def small_bundle(path, **kwargs) -> dict:
  items = clustered(300, 8, 10, seed=1)
  return write_bundle(str(path), item_embeddings=items, item_ids=np.arange(2, 302), **kwargs)


def test_exact_topk_matches_full_sort_and_jax():
  rng = np.random.default_rng(0)
  items = rng.standard_normal((500, 16)).astype(np.float32)
  queries = rng.standard_normal((37, 16)).astype(np.float32)
  ids, scores = exact_topk(items, queries, 20, batch_size=8)
  full = queries @ items.T
  np.testing.assert_array_equal(ids, np.argsort(-full, axis=1, kind="stable")[:, :20])
  np.testing.assert_allclose(scores, np.take_along_axis(full, ids, axis=1), rtol=1e-6)
  jax_ids, jax_scores = exact_topk_jax(items, queries, 20, batch_size=8)
  np.testing.assert_array_equal(jax_ids, ids)
  np.testing.assert_allclose(jax_scores, scores, rtol=1e-5, atol=1e-5)
  assert exact_topk(items, queries, 1000)[0].shape == (37, 500)  # k capped at the catalogue


def test_recall_at_k():
  exact = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
  assert recall_at_k(exact, exact, 4) == 1.0
  assert recall_at_k(np.array([[4, 3, 9, 9], [0, 0, 0, 0]]), exact, 4) == 0.25
  assert recall_at_k(np.array([[2, 1, 0, 0], [6, 5, 0, 0]]), exact, 2) == 1.0


def test_choose_params_scales_with_catalogue():
  tiny = choose_params(1500, 64)
  assert tiny.exact and ScannParams.from_json(tiny.to_json()) == tiny
  mid = choose_params(20_000, 32)
  assert not mid.exact and mid.num_leaves == 141
  assert 1 <= mid.num_leaves_to_search <= mid.num_leaves
  big = choose_params(1_000_000, 64)
  assert big.num_leaves == 1000 and big.num_leaves_to_search == 50
  assert big.training_sample_size == 100_000 and big.distance == "dot_product"
  # Unit vectors: spherical leaves, fewer of them searched and fewer candidates reordered.
  unit = choose_params(1_000_000, 64, unit_norm=True)
  assert unit.spherical and unit.num_leaves_to_search == 35 and unit.reorder == 300
  rng = np.random.default_rng(0)
  vectors = rng.standard_normal((3000, 8)).astype(np.float32)
  assert not params_for(vectors).spherical
  assert params_for(vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).spherical
  with pytest.raises(UserError, match="num_leaves_to_search=50 must be between 1 and"):
    ScannParams(num_leaves=10, num_leaves_to_search=50).check(1000, 8)
  with pytest.raises(UserError, match="avq=0.0 must be positive"):
    ScannParams(num_leaves=10, num_leaves_to_search=5, avq=0.0).check(1000, 8)
  # Tuned trees: ~2 sqrt(N) leaves, but at least 200 items each and never under sqrt(N).
  assert [index_lib._num_leaves(n) for n in (6000, 100_000, 1_000_000)] == [77, 500, 2000]


def test_small_catalogue_round_trip_is_exact(tmp_path):
  import orbax.checkpoint as ocp
  encoder = {"w": np.arange(6, dtype=np.float32).reshape(2, 3)}
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(str(tmp_path / "ckpt"), encoder)
  checkpointer.wait_until_finished()
  (tmp_path / "vocab").mkdir()
  np.savez(tmp_path / "vocab" / "item.npz", raw_ids=np.arange(300))

  items = clustered(1000, 16, 20, seed=1)
  item_ids = np.arange(2, 1002)
  queries = clustered(50, 16, 20, seed=2)
  manifest = write_bundle(str(tmp_path / "export" / "1"), item_embeddings=items,
                          item_ids=item_ids, query_params_dir=str(tmp_path / "ckpt"),
                          vocab_dir=str(tmp_path / "vocab"),
                          metadata={"step": np.int64(1200), "metrics": {"ndcg@10": 0.1}},
                          held_out_queries=queries)
  assert manifest["index"]["exact"]
  assert manifest["recall"]["recall@10"] == manifest["recall"]["recall@100"] == 1.0
  assert manifest["metadata"] == {"step": 1200, "metrics": {"ndcg@10": 0.1}}
  assert "vocab/item.npz" in manifest["sha256"]
  assert any(name.startswith("query_encoder/") for name in manifest["sha256"])

  bundle = load_bundle(latest_version(str(tmp_path / "export")))
  assert bundle.manifest == manifest
  ids, scores = bundle.search(queries, 10)
  exact_rows, exact_scores = exact_topk(items, queries, 10)
  np.testing.assert_array_equal(ids, item_ids[exact_rows])
  np.testing.assert_allclose(scores, exact_scores)
  restored = ocp.StandardCheckpointer().restore(bundle.query_encoder_dir)
  np.testing.assert_array_equal(restored["w"], encoder["w"])
  assert os.path.exists(os.path.join(bundle.vocab_dir, "item.npz"))


def test_scann_bundle_recall_and_relocation(tmp_path):
  items = clustered(20_000, 32, 200, seed=1)
  queries = clustered(300, 32, 200, seed=2)
  item_ids = np.arange(100, 20_100)
  manifest = write_bundle(str(tmp_path / "7"), item_embeddings=items, item_ids=item_ids,
                          held_out_queries=queries, max_latency_ms=1000)
  assert not manifest["index"]["exact"] and manifest["index"]["num_leaves"] == 141
  recall = manifest["recall"]
  assert recall["query_source"] == "held_out_queries" and recall["queries"] == 150
  assert recall["recall@100"] >= 0.93 and recall["tuning"]["tuning_queries"] == 150

  # Moved elsewhere (as a copy to a serving host would): index assets resolve relatively.
  shutil.move(str(tmp_path / "7"), str(tmp_path / "moved"))
  bundle = load_bundle(str(tmp_path / "moved"))
  assert bundle.recall == recall
  # The manifest's recall is measured on the held-out half, which tuning never saw.
  _, held_out, _ = split_queries(queries, items)
  ids, _ = bundle.search(held_out, 100)
  exact_ids = item_ids[exact_topk(items, held_out, 100)[0]]
  assert recall_at_k(ids, exact_ids, 100) == pytest.approx(recall["recall@100"], abs=1e-4)
  assert recall_at_k(ids, exact_ids, 10) == pytest.approx(recall["recall@10"], abs=1e-4)
  one_ids, one_scores = bundle.search(held_out[:1], 100)  # the single-query path
  assert one_ids.shape == (1, 100) and np.all(np.diff(one_scores[0]) <= 0)
  assert recall_at_k(one_ids, exact_ids[:1], 100) >= 0.8


def test_incomplete_bundle_is_refused(tmp_path):
  small_bundle(tmp_path / "b")
  os.remove(tmp_path / "b" / "manifest.json")
  with pytest.raises(UserError, match="no manifest.json: it is an incomplete bundle"):
    load_bundle(str(tmp_path / "b"))


def test_tampered_bundle_is_refused(tmp_path):
  small_bundle(tmp_path / "b")
  path = tmp_path / "b" / "items.npy"
  data = bytearray(path.read_bytes())
  data[-1] ^= 1  # one bit of the last embedding
  path.write_bytes(bytes(data))
  with pytest.raises(UserError, match="items.npy does not match its checksum"):
    load_bundle(str(tmp_path / "b"))


def test_missing_and_extra_files_are_refused(tmp_path):
  small_bundle(tmp_path / "b")
  os.remove(tmp_path / "b" / "index" / "params.json")
  with pytest.raises(UserError, match="missing index/params.json"):
    load_bundle(str(tmp_path / "b"))
  small_bundle(tmp_path / "c")
  (tmp_path / "c" / "index" / "extra.npy").write_bytes(b"x")
  with pytest.raises(UserError, match="does not list: index/extra.npy"):
    load_bundle(str(tmp_path / "c"))


def test_unknown_format_version_is_refused(tmp_path):
  small_bundle(tmp_path / "b")
  manifest_path = tmp_path / "b" / "manifest.json"
  manifest = json.loads(manifest_path.read_text())
  manifest["format_version"] = 99
  manifest_path.write_text(json.dumps(manifest))
  with pytest.raises(UserError, match=r"bundle in format 99; this jaxrec reads formats 1, 2 "
                                      r"\(it was written by a newer jaxrec\)"):
    load_bundle(str(tmp_path / "b"))
  # Format 1 (index parameters without `avq`) still reads.
  manifest["format_version"] = 1
  manifest_path.write_text(json.dumps(manifest))
  assert load_bundle(str(tmp_path / "b")).manifest["format_version"] == 1


def test_interrupted_write_leaves_no_bundle(tmp_path, monkeypatch):
  def killed(*args, **kwargs):
    raise KeyboardInterrupt

  monkeypatch.setattr(bundle_lib, "build_index", killed)
  with pytest.raises(KeyboardInterrupt):
    small_bundle(tmp_path / "export" / "1")
  assert os.listdir(tmp_path / "export") == []  # neither the bundle nor its temporary directory


def test_bad_inputs_are_refused(tmp_path):
  items = clustered(100, 8, 4, seed=1)
  with pytest.raises(UserError, match="one id per embedding row"):
    write_bundle(str(tmp_path / "a"), item_embeddings=items, item_ids=np.arange(99))
  with pytest.raises(UserError, match="duplicates"):
    write_bundle(str(tmp_path / "a"), item_embeddings=items, item_ids=np.zeros(100, int))
  items[3, 2] = np.nan
  with pytest.raises(UserError, match="NaN"):
    write_bundle(str(tmp_path / "a"), item_embeddings=items, item_ids=np.arange(100))
  with pytest.raises(UserError, match="is not a directory"):
    small_bundle(tmp_path / "a", query_params_dir=str(tmp_path / "nowhere"))
  small_bundle(tmp_path / "a")
  with pytest.raises(UserError, match="already exists"):
    small_bundle(tmp_path / "a")
  assert not os.path.exists(tmp_path / "nowhere")


def test_latest_version(tmp_path):
  with pytest.raises(UserError, match="holds no complete bundle"):
    latest_version(str(tmp_path))
  for name in ["3", "9", "12"]:
    small_bundle(tmp_path / name)
  os.makedirs(tmp_path / "13")  # still being copied in: no manifest yet
  os.makedirs(tmp_path / ".14.incomplete-x1y2")  # an export in progress
  os.makedirs(tmp_path / "notes")
  assert latest_version(str(tmp_path)) == str(tmp_path / "12")  # 12 > 9 as numbers
  assert load_bundle(latest_version(str(tmp_path))).manifest["num_items"] == 300


def _lognormal(num: int, dim: int, clusters: int, seed: int) -> np.ndarray:
  """Clustered directions with log-normal norms (sigma 0.35): a sequential model's items."""
  norms = np.exp(0.35 * np.random.default_rng(seed + 100).standard_normal((num, 1)))
  return (clustered(num, dim, clusters, seed) * norms).astype(np.float32)


def test_tuning_meets_the_target_on_held_out_queries():
  items = _lognormal(6000, 16, 30, seed=1)
  queries = clustered(400, 16, 30, seed=2)
  # A generous latency cap: these tests check the tuning, not this (shared) machine's speed.
  retriever = build_index(items, queries=queries, target_recall=0.9, recall_k=50,
                          max_latency_ms=1000)
  tuning = retriever.tuning
  assert tuning["target_met"] and tuning["tuning_recall"] >= 0.9
  assert tuning["tuning_queries"] == tuning["held_out_queries"] == 200
  # Held-out queries: none is a tuning query; the recall promised is theirs.
  tune, held_out, source = split_queries(queries, items)
  assert source == "held_out_queries" and not (set(map(bytes, tune)) & set(map(bytes, held_out)))
  rows, _ = retriever.search(held_out, 50)
  held = recall_at_k(rows, exact_topk(items, held_out, 50)[0], 50)
  assert held == pytest.approx(tuning["held_out_recall"], abs=1e-4) and held >= 0.88
  # The settings kept are the chosen trial's.
  structures = {t["structure"] for t in tuning["trials"]}
  assert "anisotropic tree" in structures
  assert retriever.params.avq == index_lib.AVQ_ETA  # AVQ leaf centres, kept in the parameters
  assert retriever.params.num_leaves_to_search == tuning["chosen"]["num_leaves_to_search"]
  assert retriever.params.reorder == tuning["chosen"]["reorder"]
  assert tuning["latency_ms_per_query"] > 0 and tuning["latency_cap_ms"] == 1000
  # Without queries, tuning and held-out queries are disjoint samples of the items.
  sampled = build_index(items, target_recall=0.9, recall_k=50, max_latency_ms=1000).tuning
  assert sampled["query_source"] == "item_sample" and sampled["held_out_queries"] == 1000


def test_an_unreachable_target_fails_unless_a_lower_recall_is_accepted(tmp_path):
  # Isotropic gaussian vectors: a query's top 100 spread over every leaf, so searching at most
  # half of them (even with each item in two leaves) cannot reach 0.999.
  rng = np.random.default_rng(0)
  items = rng.standard_normal((4000, 64)).astype(np.float32)
  queries = rng.standard_normal((200, 64)).astype(np.float32)
  with pytest.raises(RecallNotMet, match=r"no index setting reaches recall@100 0.999 .* Best "
                                         r"within the cap: recall@100 0\.\d+ .*--accept-recall"):
    build_index(items, queries=queries, target_recall=0.999, max_latency_ms=1000)
  assert issubclass(RecallNotMet, UserError)  # the CLI prints it and exits 2
  with pytest.raises(RecallNotMet, match="below the accepted 0.99"):
    build_index(items, queries=queries, target_recall=0.995, accept_recall=0.99)
  with pytest.raises(UserError, match="accept_recall must be in"):
    build_index(items, queries=queries, target_recall=0.9, accept_recall=0.95)

  manifest = write_bundle(str(tmp_path / "b"), item_embeddings=items,
                          item_ids=np.arange(len(items)), held_out_queries=queries,
                          target_recall=0.999, accept_recall=0.2, max_latency_ms=1000)
  recall = manifest["recall"]
  assert recall["tuning"]["accept_recall"] == 0.2 and not recall["tuning"]["target_met"]
  assert 0.2 <= recall["tuning"]["tuning_recall"] < 0.999
  assert load_bundle(str(tmp_path / "b")).recall["recall@100"] == recall["recall@100"]
