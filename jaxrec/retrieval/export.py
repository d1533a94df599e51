"""`jaxrec export`: a trained workdir's best checkpoint -> a versioned retrieval bundle.

The bundle (bundle.py) holds every catalogue item's vector from the model, a ScaNN index over them
with its recall measured against exact search on the validation users' query vectors, the model
parameters as an Orbax checkpoint with the config that rebuilds the model (serving runs its query
tower; its item tower embeds items added after training), and the dataset's vocabularies. Any
task that embeds queries and items exports: two-tower, the sequential models, BPR-MF.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jaxrec.config import save_config
from jaxrec.data.vocab import FIRST_ID
from jaxrec.errors import UserError
from jaxrec.retrieval.bundle import write_bundle
from jaxrec.retrieval.index import ScannParams, is_unit_norm, params_for
from jaxrec.train.evaluate import restore_best

CONFIG = "config.json"
PARAMS = "params"
USER_ENCODER = "user_encoder"  # in an exported ranker: the model its user-embedding feature reads


def next_version(export_root: str) -> int:
  """One more than the highest integer version under `export_root` (1 for a new root)."""
  if not os.path.isdir(export_root):
    return 1
  versions = [int(name) for name in os.listdir(export_root) if name.isascii() and name.isdigit()]
  return max(versions, default=0) + 1


def embeddings(run) -> tuple[np.ndarray, np.ndarray]:
  """(item vectors [V - 2, D], validation query vectors [U, D]) of a restored run."""
  task = run.task
  model = nnx.merge(run.graphdef, run.state)
  try:
    items = jax.jit(task.item_vectors)(model)
    query = jax.jit(task.query_vectors)
  except NotImplementedError as e:
    raise UserError(f"task {run.config.task!r} cannot be exported: {e}. Export a two_tower, "
                    "sequential or bpr workdir.") from e
  queries = []
  for batch in task.eval_batches("valid"):
    weight = batch.pop("weight")
    vectors = np.asarray(query(model, run.partitioner.shard_inputs(batch)))
    queries.append(vectors[weight > 0])
  return np.asarray(items, np.float32)[FIRST_ID:], np.concatenate(queries).astype(np.float32)


def save_params(run, out_dir: str) -> None:
  """A restored run's parameters (Orbax, host arrays: they restore onto any mesh, or none) and
  the config that rebuilds its model."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(out_dir, PARAMS), jax.device_get(nnx.to_pure_dict(run.state)))
  checkpointer.wait_until_finished()
  save_config(run.config, os.path.join(out_dir, CONFIG))


def export_workdir(workdir: str, export_root: str, version: int | None = None,
                   exact: bool = False, index_overrides: dict | None = None,
                   ranker: str | None = None) -> tuple[str, dict]:
  """Writes `export_root/<version>` (default: the next one) and returns (path, manifest).

  The bundle holds the prepared dataset the model read (users' histories, side features): a
  serving job builds queries from it. With `ranker` (a ranking workdir trained on the same
  dataset) it also holds the multi-task ranker, which reads its features from the same dataset.

  The index is brute force with `exact`, else ScaNN with parameters chosen from the catalogue
  size (params_for: brute force below EXACT_BELOW items) and `index_overrides` applied, e.g.
  {"num_leaves_to_search": 80} (which also forces a ScaNN tree on a small catalogue).
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
  run, step = restore_best(workdir)
  ranker_run = _ranker(ranker, run) if ranker else None
  items, queries = embeddings(run)
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
  config = run.config
  metadata = {
      "source": {"workdir": os.path.abspath(workdir), "step": step, "task": config.task,
                 "model": config.model.name, "dataset": run.task.data.path},
      "metrics": {split: results[split] for split in ("valid", "test") if split in results},
      "query_dim": int(queries.shape[1]),
      "item_ids": "rows are item vocabulary ids 2..V-1 (vocab/item.npz maps them to raw ids)",
  }
  if ranker_run is not None:
    metadata["ranker"] = {"workdir": os.path.abspath(ranker), "step": ranker_run[1],
                          "heads": list(ranker_run[0].task.heads),
                          "policy": dict(ranker_run[0].config.policy)}
  with tempfile.TemporaryDirectory() as tmp:
    params_dir = os.path.join(tmp, "query_encoder")
    save_params(run, params_dir)
    ranker_dir = None
    if ranker_run is not None:
      ranker_dir = os.path.join(tmp, "ranker")
      save_params(ranker_run[0], ranker_dir)
      encoder = ranker_run[0].config.model.get("user_embedding_from")
      if encoder:  # the ranker's user-embedding feature: serving computes it with this model
        save_params(restore_best(encoder)[0], os.path.join(ranker_dir, USER_ENCODER))
    manifest = write_bundle(
        out, item_embeddings=items, item_ids=np.arange(FIRST_ID, FIRST_ID + len(items)),
        query_params_dir=params_dir, vocab_dir=os.path.join(run.task.data.path, "vocab"),
        ranker_dir=ranker_dir, dataset_dir=run.task.data.path,
        metadata=metadata, scann=scann, held_out_queries=queries)
  return out, manifest


def _ranker(workdir: str, retrieval_run):
  """The ranking workdir's best checkpoint, checked to fit beside the retrieval model."""
  run, step = restore_best(workdir)
  if run.config.task != "ranking":
    raise UserError(f"--ranker {workdir} holds a {run.config.task!r} run: pass a workdir "
                    "trained with task 'ranking' (e.g. configs/movielens_dlrm.py).")
  ours, theirs = (os.path.realpath(r.task.data.path) for r in (retrieval_run, run))
  if ours != theirs:
    raise UserError(f"the ranker was trained on {theirs} and the retrieval model on {ours}: "
                    "both must read the same prepared dataset (their item ids must agree).")
  return run, step
