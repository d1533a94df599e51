"""`jaxrec export`: a trained workdir's best checkpoint -> a versioned retrieval bundle.

The bundle (retrieval/bundle.py) holds every catalogue item's vector from the model, a ScaNN
index over them tuned to a recall target on half of the validation users' query vectors, with its
recall measured against exact search on the other half (retrieval/index.py), the model
parameters as an Orbax checkpoint with the config that rebuilds the model
(serving runs its query tower; its item tower embeds items added after training), and the
dataset's vocabularies. Any task that embeds queries and items exports: two-tower, the
sequential models, BPR-MF. The model is restored alone (train/restore.py): no optimizer state.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import jax
import numpy as np

from jaxrec.data.vocab import FIRST_ID
from jaxrec.errors import UserError
from jaxrec.retrieval.bundle import USER_ENCODER, write_bundle
from jaxrec.retrieval.index import (RECALL_K, TARGET_RECALL, ScannParams, is_unit_norm,
                                    params_for)
from jaxrec.train.restore import TrainedModel, restore_model, save_exported


def next_version(export_root: str) -> int:
  """One more than the highest integer version under `export_root` (1 for a new root)."""
  if not os.path.isdir(export_root):
    return 1
  versions = [int(name) for name in os.listdir(export_root) if name.isascii() and name.isdigit()]
  return max(versions, default=0) + 1


def embeddings(model: TrainedModel) -> tuple[np.ndarray, np.ndarray]:
  """(item vectors [V - 2, D], validation query vectors [U, D]) of a restored model."""
  task, module = model.task, model.model()
  try:
    items = jax.jit(task.item_vectors)(module)
    query = jax.jit(task.query_vectors)
  except NotImplementedError as e:
    raise UserError(f"task {model.config.task!r} cannot be exported: {e}. Export a two_tower, "
                    "sequential or bpr workdir.") from e
  queries = []
  for batch in task.eval_batches("valid"):
    weight = batch.pop("weight")
    vectors = np.asarray(query(module, model.partitioner.shard_inputs(batch)))
    queries.append(vectors[weight > 0])
  return np.asarray(items, np.float32)[FIRST_ID:], np.concatenate(queries).astype(np.float32)


def export_workdir(workdir: str, export_root: str, version: int | None = None,
                   exact: bool = False, index_overrides: dict | None = None,
                   ranker: str | None = None, target_recall: float = TARGET_RECALL,
                   recall_k: int = RECALL_K, accept_recall: float | None = None,
                   max_latency_ms: float | None = None) -> tuple[str, dict]:
  """Writes `export_root/<version>` (default: the next one) and returns (path, manifest).

  The bundle holds the prepared dataset the model read (users' histories, side features): a
  serving job builds queries from it. With `ranker` (a ranking workdir trained on the same
  dataset) it also holds the multi-task ranker, which reads its features from the same dataset.

  The index is brute force with `exact`; else ScaNN tuned to `target_recall` of
  recall@`recall_k` (brute force below EXACT_BELOW items), or RecallNotMet (a UserError: exit 2)
  naming the best recall found when no setting within `max_latency_ms` reaches it, unless one
  reaches `accept_recall`. With `index_overrides`, e.g. {"num_leaves_to_search": 80}, the tree is
  built as given instead, untuned (which also forces a tree on a small catalogue).
  """
  if exact and index_overrides:
    raise UserError(f"an exact index has no tree to tune: drop {sorted(index_overrides)} or "
                    "drop --exact.")
  version = next_version(export_root) if version is None else version
  if version < 1:
    raise UserError(f"--version must be a positive integer, got {version}.")
  out = os.path.join(export_root, str(version))
  if os.path.exists(out):
    raise UserError(f"{out} already exists: bundles are never overwritten. Pick another "
                    "--version or leave it out to take the next one.")
  model = restore_model(workdir)
  ranking = _ranker(ranker, model) if ranker else None
  items, queries = embeddings(model)
  scann = ScannParams(exact=True) if exact else None
  if index_overrides:
    tree = params_for(items)
    if tree.exact:  # a small catalogue: start from a tree over it
      tree = ScannParams(num_leaves=max(1, round(np.sqrt(len(items)))),
                         num_leaves_to_search=max(1, round(np.sqrt(len(items)) / 4)),
                         training_sample_size=len(items), dims_per_block=min(2, items.shape[1]),
                         spherical=is_unit_norm(items))
    try:
      scann = dataclasses.replace(tree, **index_overrides)
    except TypeError as e:
      raise UserError(f"unknown index parameter in {sorted(index_overrides)}: {e}.") from e
  results_path = os.path.join(workdir, "results.json")
  results = {}
  if os.path.exists(results_path):
    with open(results_path) as f:
      results = json.load(f)
  config = model.config
  metadata = {
      "source": {"workdir": os.path.abspath(workdir), "step": model.step, "task": config.task,
                 "model": config.model.name, "dataset": model.task.data.path},
      "metrics": {split: results[split] for split in ("valid", "test") if split in results},
      "query_dim": int(queries.shape[1]),
      "item_ids": "rows are item vocabulary ids 2..V-1 (vocab/item.npz maps them to raw ids)",
  }
  if ranking is not None:
    metadata["ranker"] = {"workdir": os.path.abspath(ranker), "step": ranking.step,
                          "heads": list(ranking.task.heads),
                          "policy": dict(ranking.config.policy)}
  with tempfile.TemporaryDirectory() as tmp:
    params_dir = os.path.join(tmp, "query_encoder")
    save_exported(model, params_dir)
    ranker_dir = None
    if ranking is not None:
      ranker_dir = os.path.join(tmp, "ranker")
      save_exported(ranking, ranker_dir)
      encoder = ranking.config.model.get("user_embedding_from")
      if encoder:  # the ranker's user-embedding feature: serving computes it with this model
        save_exported(restore_model(encoder), os.path.join(ranker_dir, USER_ENCODER))
    manifest = write_bundle(
        out, item_embeddings=items, item_ids=np.arange(FIRST_ID, FIRST_ID + len(items)),
        query_params_dir=params_dir, vocab_dir=os.path.join(model.task.data.path, "vocab"),
        ranker_dir=ranker_dir, dataset_dir=model.task.data.path,
        metadata=metadata, scann=scann, held_out_queries=queries, target_recall=target_recall,
        recall_k=recall_k, accept_recall=accept_recall, max_latency_ms=max_latency_ms)
  return out, manifest


def _ranker(workdir: str, retrieval: TrainedModel) -> TrainedModel:
  """The ranking workdir's best checkpoint, checked to fit beside the retrieval model."""
  ranker = restore_model(workdir)
  if ranker.config.task != "ranking":
    raise UserError(f"--ranker {workdir} holds a {ranker.config.task!r} run: pass a workdir "
                    "trained with task 'ranking' (e.g. configs/movielens_dlrm.py).")
  ours, theirs = (os.path.realpath(m.task.data.path) for m in (retrieval, ranker))
  if ours != theirs:
    raise UserError(f"the ranker was trained on {theirs} and the retrieval model on {ours}: "
                    "both must read the same prepared dataset (their item ids must agree).")
  return ranker
