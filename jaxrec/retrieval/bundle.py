"""The export bundle: everything serving needs to answer "top-k items for this user".

    manifest.json     written last: format version, sizes, index parameters, measured recall,
                      the caller's metadata, and the sha256 of every other file
    items.npy         item embeddings [N, D] float32, row r is the item item_ids[r]
    item_ids.npy      the vocabulary ids of the rows
    index/            the retrieval index over items.npy (see index.py)
    query_encoder/    the query tower's Orbax checkpoint, copied in as given (optional)
    ranker/           the multi-task ranker's Orbax checkpoint (optional)
    dataset/          the prepared dataset the models read features from (optional): side
                      features, vocabularies, users' histories
    vocab/            the vocabularies, copied in as given (optional)

A bundle is written under a temporary name and renamed when complete, so a reader never sees a
partial one; the manifest's checksums catch one modified or truncated afterwards. Bundles are
kept as `export_root/<version>/` with increasing integer versions (a counter or a timestamp such
as 20250101120000); `latest_version` picks the newest complete one.
"""

from __future__ import annotations

import dataclasses
import datetime
import hashlib
import json
import os
import shutil
import time

import numpy as np

from jaxrec.data.storage import atomic_directory
from jaxrec.errors import UserError
from jaxrec.retrieval.exact import exact_topk, recall_at_k
from jaxrec.retrieval.index import (RECALL_K, TARGET_RECALL, Retriever, ScannParams,
                                    build_index)

# 2: index parameters gained `avq` (AVQ leaf centres). A format-1 bundle still reads (its
# parameters lack the field: mean centres); a jaxrec that reads only format 1 refuses a format-2
# bundle by this number, before it would trip over the unknown field.
FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
MANIFEST = "manifest.json"
ITEMS = "items.npy"
ITEM_IDS = "item_ids.npy"
INDEX = "index"
QUERY_ENCODER = "query_encoder"
VOCAB = "vocab"
RANKER = "ranker"
DATASET = "dataset"
# An exported model directory (the query encoder, the ranker, a ranker's user encoder): the
# config that rebuilds the model and its parameters as an Orbax checkpoint of host arrays.
MODEL_CONFIG = "config.json"
MODEL_PARAMS = "params"
USER_ENCODER = "user_encoder"  # in an exported ranker: the model its user-embedding feature reads
RECALL_KS = (10, 100)
RECALL_SAMPLE = 1000  # item vectors used as queries when no held-out queries are given


@dataclasses.dataclass
class Bundle:
  path: str
  manifest: dict
  items: np.ndarray  # [N, D] float32
  item_ids: np.ndarray  # [N] vocabulary ids
  retriever: Retriever

  def search(self, queries: np.ndarray, k: int,
             parallel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-k items for each query [Q, D]: (vocabulary ids [Q, k], scores [Q, k]), best first."""
    rows, scores = self.retriever.search(queries, k, parallel=parallel)
    return self.item_ids[rows], scores

  @property
  def recall(self) -> dict:
    """The index's recall against exact search, measured at export on queries it was not tuned
    on: recall@10, recall@K, queries, query_source, and `tuning` (target, latency, trials)."""
    return self.manifest["recall"]

  @property
  def query_encoder_dir(self) -> str | None:
    return self._optional(QUERY_ENCODER)

  @property
  def vocab_dir(self) -> str | None:
    return self._optional(VOCAB)

  @property
  def ranker_dir(self) -> str | None:
    return self._optional(RANKER)

  @property
  def dataset_dir(self) -> str | None:
    return self._optional(DATASET)

  def _optional(self, name: str) -> str | None:
    path = os.path.join(self.path, name)
    return path if os.path.isdir(path) else None


def write_bundle(out_dir: str, *, item_embeddings: np.ndarray, item_ids: np.ndarray,
                 query_params_dir: str | None = None, vocab_dir: str | None = None,
                 ranker_dir: str | None = None, dataset_dir: str | None = None,
                 metadata: dict | None = None, scann: ScannParams | None = None,
                 held_out_queries: np.ndarray | None = None, overwrite: bool = False,
                 seed: int = 0, target_recall: float = TARGET_RECALL, recall_k: int = RECALL_K,
                 accept_recall: float | None = None,
                 max_latency_ms: float | None = None) -> dict:
  """Writes a bundle to `out_dir` and returns its manifest.

  Without `scann`, the index is tuned to `target_recall` of recall@`recall_k` (index.build_index)
  on half of `held_out_queries` ([Q, D]; else on a sample of item vectors) and its recall is
  measured on the other half; RecallNotMet (a UserError) when no setting reaches it. With
  `scann`, the index is built as given and its recall measured on all of `held_out_queries`.
  """
  items = _check_items(item_embeddings)
  item_ids = _check_ids(item_ids, len(items))
  arguments = {"query_params_dir": query_params_dir, "vocab_dir": vocab_dir,
               "ranker_dir": ranker_dir, "dataset_dir": dataset_dir}
  for name, source in arguments.items():
    _check_source_dir(name, source)
  copies = dict(zip((QUERY_ENCODER, VOCAB, RANKER, DATASET), arguments.values()))
  if held_out_queries is not None:
    held_out_queries = np.asarray(held_out_queries, np.float32)
    if held_out_queries.ndim != 2 or held_out_queries.shape[1] != items.shape[1]:
      raise UserError(f"held_out_queries has shape {held_out_queries.shape}, expected "
                      f"[Q, {items.shape[1]}] like the item embeddings.")
  metadata_json = _to_json(metadata or {})
  if scann is not None:
    scann.check(*items.shape)

  with atomic_directory(out_dir, overwrite=overwrite) as tmp:
    np.save(os.path.join(tmp, ITEMS), items)
    np.save(os.path.join(tmp, ITEM_IDS), item_ids)
    started = time.perf_counter()
    retriever = build_index(items, scann, queries=held_out_queries, target_recall=target_recall,
                            recall_k=recall_k, accept_recall=accept_recall,
                            max_latency_ms=max_latency_ms, seed=seed)
    build_seconds = time.perf_counter() - started
    params = retriever.params
    retriever.save(os.path.join(tmp, INDEX))
    for name, source in copies.items():
      if source:
        shutil.copytree(source, os.path.join(tmp, name))
    if retriever.tuning is None:
      recall = _measure_recall(retriever, held_out_queries, seed)
    else:
      recall = _tuned_recall(retriever.tuning)
    manifest = {
        "format_version": FORMAT_VERSION,
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "num_items": int(items.shape[0]),
        "dim": int(items.shape[1]),
        "index": {**params.to_json(), "build_seconds": round(build_seconds, 3)},
        "recall": recall,
        "metadata": metadata_json,
        "sha256": _checksums(tmp),
    }
    # Last: a directory with a manifest is a complete bundle.
    with open(os.path.join(tmp, MANIFEST), "w") as f:
      json.dump(manifest, f, indent=2)
  return manifest


def load_bundle(path: str) -> Bundle:
  """Reads a bundle after checking it is complete and unmodified; raises UserError if not."""
  path = os.path.abspath(path)
  if not os.path.isdir(path):
    raise UserError(f"{path} is not a directory. Point at an export bundle written by "
                    "write_bundle, e.g. EXPORT_ROOT/<version>.")
  manifest_path = os.path.join(path, MANIFEST)
  if not os.path.exists(manifest_path):
    raise UserError(f"{path} has no {MANIFEST}: it is an incomplete bundle (the export did not "
                    "finish) or not a bundle at all. Export it again.")
  try:
    with open(manifest_path) as f:
      manifest = json.load(f)
  except (OSError, ValueError) as e:
    raise UserError(f"{manifest_path} cannot be read ({e}): the bundle is damaged. "
                    "Export it again.") from e
  version = manifest.get("format_version")
  if version not in READABLE_FORMATS:
    newer = isinstance(version, int) and version > FORMAT_VERSION
    raise UserError(f"{path} is a bundle in format {version}; this jaxrec reads formats "
                    f"{', '.join(map(str, READABLE_FORMATS))}"
                    f"{' (it was written by a newer jaxrec)' if newer else ''}. Export it "
                    "again with this jaxrec, or serve it with the jaxrec that wrote it.")
  if not isinstance(manifest.get("sha256"), dict):
    raise UserError(f"{manifest_path} has no file checksums: the bundle is damaged. "
                    "Export it again.")
  _verify(path, manifest["sha256"])

  items = np.load(os.path.join(path, ITEMS), allow_pickle=False)
  item_ids = np.load(os.path.join(path, ITEM_IDS), allow_pickle=False)
  if items.shape != (manifest["num_items"], manifest["dim"]) or len(item_ids) != len(items):
    raise UserError(f"{path}: {ITEMS} has shape {items.shape} and {ITEM_IDS} {len(item_ids)} "
                    f"rows, but the manifest says {manifest['num_items']} x {manifest['dim']}. "
                    "Export it again.")
  retriever = Retriever.load(os.path.join(path, INDEX), items)
  return Bundle(path, manifest, items, item_ids, retriever)


def latest_version(export_root: str) -> str:
  """The path of the highest-numbered complete bundle under `export_root`."""
  return complete_versions(export_root)[0]


def complete_versions(export_root: str) -> list[str]:
  """Absolute paths of the complete bundles under `export_root`, newest (highest version) first.

  Version directories are named by integers (counters or timestamps); anything else, such as
  the hidden temporary directory of an export in progress, is ignored, and so is a version
  directory still being copied in: one whose manifest, or a file the manifest lists, is not
  there yet (a plain `cp -a` may write the manifest before the index).
  """
  if not os.path.isdir(export_root):
    raise UserError(f"{export_root} is not a directory. Export a bundle to "
                    f"{export_root}/<version> first.")
  export_root = os.path.abspath(export_root)
  versions = [name for name in os.listdir(export_root) if name.isascii() and name.isdigit()
              and _listed_files_present(os.path.join(export_root, name))]
  if not versions:
    raise UserError(f"{export_root} holds no complete bundle: expected directories named by an "
                    f"integer version (e.g. {export_root}/1) containing {MANIFEST} and every "
                    "file it lists. Export one first.")
  return [os.path.join(export_root, v) for v in sorted(versions, key=int, reverse=True)]


def _listed_files_present(path: str) -> bool:
  """The manifest reads and every file it lists exists (checksums are load_bundle's job)."""
  try:
    with open(os.path.join(path, MANIFEST)) as f:
      listed = json.load(f).get("sha256")
  except (OSError, ValueError, AttributeError):
    return False
  return isinstance(listed, dict) and all(os.path.isfile(os.path.join(path, name))
                                          for name in listed)


def _check_items(item_embeddings) -> np.ndarray:
  items = np.asarray(item_embeddings)
  if items.ndim != 2 or items.shape[0] == 0 or items.shape[1] == 0:
    raise UserError(f"item_embeddings has shape {items.shape}: expected [num_items, dim] with "
                    "at least one item.")
  if not np.issubdtype(items.dtype, np.floating):
    raise UserError(f"item_embeddings has dtype {items.dtype}: expected float32 vectors.")
  items = np.ascontiguousarray(items, np.float32)
  if not np.isfinite(items).all():
    raise UserError("item_embeddings contain NaN or infinite values: check the model that "
                    "produced them (a diverged checkpoint?).")
  return items


def _check_ids(item_ids, num_items: int) -> np.ndarray:
  ids = np.asarray(item_ids)
  if ids.shape != (num_items,):
    raise UserError(f"item_ids has shape {ids.shape}: expected one id per embedding row "
                    f"({num_items},).")
  if ids.dtype == object:
    raise UserError("item_ids must be integers or strings, not Python objects: pass "
                    "np.asarray(ids, np.int64) or .astype(str).")
  if len(np.unique(ids)) != len(ids):
    raise UserError("item_ids contain duplicates: each embedding row must be a different item.")
  return ids


def _check_source_dir(name: str, source: str | None) -> None:
  if source is None:
    return
  if not os.path.isdir(source):
    raise UserError(f"{name}={source!r} is not a directory. Pass the directory to copy into the "
                    "bundle, or None to leave it out.")
  if "orbax-checkpoint-tmp" in os.path.basename(os.path.normpath(source)):
    raise UserError(f"{name}={source!r} is an Orbax checkpoint still being written. Wait for "
                    "the save to finish (wait_until_finished) and pass the final directory.")


def _to_json(metadata: dict) -> dict:
  """`metadata` as plain JSON values (numpy scalars and arrays converted)."""
  def convert(x):
    if isinstance(x, np.generic):
      return x.item()
    if isinstance(x, np.ndarray):
      return x.tolist()
    raise TypeError(f"{type(x).__name__} {x!r}")
  try:
    return json.loads(json.dumps(metadata, default=convert))
  except (TypeError, ValueError) as e:
    raise UserError(f"metadata must hold JSON values (numbers, strings, lists, dicts): {e} is "
                    "not one. Convert it, e.g. str() it.") from e


def _measure_recall(retriever: Retriever, queries: np.ndarray | None, seed: int) -> dict:
  source = "held_out_queries"
  if queries is None or len(queries) == 0:
    source = "item_sample"
    rng = np.random.default_rng(seed)
    count = min(RECALL_SAMPLE, retriever.num_items)
    queries = retriever.items[rng.choice(retriever.num_items, count, replace=False)]
  k = max(RECALL_KS)
  approx, _ = retriever.search(queries, k)
  exact, _ = exact_topk(retriever.items, queries, k)
  recall = {f"recall@{r}": round(recall_at_k(approx, exact, r), 4) for r in RECALL_KS}
  return {**recall, "queries": int(len(queries)), "query_source": source}


def _tuned_recall(tuning: dict) -> dict:
  """The manifest's recall of a tuned index: measured on held-out queries, none used to tune."""
  k = tuning["recall_k"]
  return {"recall@10": tuning["held_out_recall_at_10"], f"recall@{k}": tuning["held_out_recall"],
          "queries": tuning["held_out_queries"], "query_source": tuning["query_source"],
          "latency_ms_per_query": tuning.get("latency_ms_per_query"), "tuning": tuning}


def _files(root: str) -> list[str]:
  """Every file under `root` as a '/'-separated relative path, sorted."""
  found = []
  for folder, dirs, names in os.walk(root):
    dirs.sort()
    found += [os.path.relpath(os.path.join(folder, n), root).replace(os.sep, "/") for n in names]
  return sorted(found)


def _sha256(path: str) -> str:
  digest = hashlib.sha256()
  with open(path, "rb") as f:
    while chunk := f.read(1 << 20):
      digest.update(chunk)
  return digest.hexdigest()


def _checksums(root: str) -> dict[str, str]:
  return {name: _sha256(os.path.join(root, name)) for name in _files(root) if name != MANIFEST}


def _verify(path: str, expected: dict[str, str]) -> None:
  present = set(_files(path)) - {MANIFEST}
  missing = sorted(set(expected) - present)
  if missing:
    raise UserError(f"{path} is missing {', '.join(missing)}: the bundle is incomplete. Copy it "
                    "again from its source, or export it again.")
  extra = sorted(present - set(expected))
  if extra:
    raise UserError(f"{path} holds files its manifest does not list: {', '.join(extra)}. Bundles "
                    "must not be modified after export: remove them, or export again.")
  for name in sorted(expected):
    if _sha256(os.path.join(path, name)) != expected[name]:
      raise UserError(f"{path}/{name} does not match its checksum in {MANIFEST}: the file was "
                      "modified or corrupted after export. Copy the bundle again from its "
                      "source, or export it again.")
