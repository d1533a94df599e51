"""The searcher behind an index: a ScaNN tree + asymmetric-hashing index, or brute force, built
exactly as its parameters say (index.py chooses them).

ScaNN partitions the items into `num_leaves` k-means leaves, scores the items of the
`num_leaves_to_search` leaves nearest a query with 4-bit anisotropic product quantization
(`dims_per_block` dimensions per code), then re-scores the best `reorder` candidates exactly.
A catalogue too small to gain from that is searched by brute force, which is exact and fast at
that size.

An index directory holds `params.json` and, for ScaNN, the searcher's own serialized files. It
does not hold the item matrix for the exact path: the caller passes the items back in on load.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os

import numpy as np

from jaxrec.errors import UserError
from jaxrec.retrieval.exact import exact_topk

PARAMS = "params.json"
# Below this many items brute force answers in well under a millisecond per query and is exact;
# a tree would have too few items per leaf to train its quantizers well.
EXACT_BELOW = 2000
# Leaves searched: 5% of them, and at least ~MIN_SCANNED items' worth. On clustered 64-d vectors
# (benchmarks/scann_vs_exact.py, 500 candidates reordered) 5% of sqrt(N) leaves gives recall@100
# ~0.96 at 1M items, ~8k queries/s on one thread; 2*sqrt(N) leaves did worse at equal speed. A
# smaller catalogue spreads a query's top 100 over a larger share of its items (5% of 200k
# items: recall@100 0.84), and scanning 50k items costs no more there than at 1M.
LEAVES_SEARCHED = 0.05
MIN_SCANNED = 50_000
REORDER = 500
# Unit-norm items (a two-tower's L2-normalised outputs) are partitioned by spherical k-means,
# which groups by angle, as inner-product ranking does: the same recall from 30% fewer leaves and
# fewer reordered candidates (1M clustered unit vectors, single thread: 35 leaves + 300
# reordered gave recall@100 0.961 at 10.4k queries/s; 50 + 500 without it 0.964 at 8.3k).
SPHERICAL_SCAN = 0.7
SPHERICAL_REORDER = 300

@dataclasses.dataclass(frozen=True)
class ScannParams:
  """How the index is built. With `exact=True` the other fields are unused: brute force."""
  num_leaves: int = 1000
  num_leaves_to_search: int = 50
  training_sample_size: int = 100_000
  dims_per_block: int = 2
  # 0.2 is ScaNN's recommended anisotropic threshold for dot product with normalised-ish data.
  anisotropic_quantization_threshold: float = 0.2
  reorder: int = REORDER  # candidates re-scored exactly before the final top-k (at least k)
  distance: str = "dot_product"
  spherical: bool = False  # spherical k-means leaves: for unit-norm items
  # MIPS -> cosine: the tree indexes [x, sqrt(M^2 - |x|^2)] / M (M = `augment_norm`, the largest
  # item norm), all unit vectors, and queries get a 0 appended: the same ranking by inner product,
  # but leaves grouped by angle whatever the items' norms (Bachrach et al. 2014).
  augment: bool = False
  augment_norm: float = 0.0
  # SOAR (Sun et al. 2023): each item also goes into a second leaf chosen so that the two leaves'
  # errors are near-orthogonal; a query that misses an item's first leaf often finds its second.
  # Costs about twice the items scanned per leaf, and a longer build.
  soar_lambda: float | None = None
  # AVQ leaves (ScaNN's tree(avq=eta)): each leaf centre is moved to where its items' inner
  # products with queries are least distorted (anisotropic weight eta on the error along each
  # item), instead of their mean. A query then ranks the leaves by a better estimate of its best
  # scores in them, and with SOAR the second leaves are chosen against that (see index.py).
  avq: float | None = None
  builder: str = "tree_ah"  # or "autopilot": ScaNN chose the tree (fields record its choice)
  exact: bool = False

  def to_json(self) -> dict:
    if self.exact:  # the tree fields mean nothing here; leave them out of manifests
      return {"exact": True, "distance": self.distance}
    return dataclasses.asdict(self)

  @classmethod
  def from_json(cls, data: dict) -> ScannParams:
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
      raise UserError(f"Unknown index parameters {unknown}: the index was written by a newer "
                      f"jaxrec, which this one cannot read. Known: {sorted(known)}.")
    return cls(**data)

  def check(self, num_items: int, dim: int) -> None:
    """Raises UserError if these parameters cannot index `num_items` vectors of `dim`."""
    if self.distance != "dot_product":
      raise UserError(f"distance {self.distance!r} is not supported: retrieval ranks by inner "
                      "product. Use distance='dot_product' (L2-normalise vectors for cosine).")
    if self.exact:
      return
    problems = []
    if not 1 <= self.num_leaves <= num_items:
      problems.append(f"num_leaves={self.num_leaves} must be between 1 and the {num_items} items")
    if not 1 <= self.num_leaves_to_search <= self.num_leaves:
      problems.append(f"num_leaves_to_search={self.num_leaves_to_search} must be between 1 and "
                      f"num_leaves={self.num_leaves}")
    if not 1 <= self.dims_per_block <= dim:
      problems.append(f"dims_per_block={self.dims_per_block} must be between 1 and dim={dim}")
    if self.avq is not None and not self.avq > 0:
      problems.append(f"avq={self.avq} must be positive (or None: mean leaf centres)")
    if self.augment and not self.augment_norm > 0:
      problems.append(f"augment_norm={self.augment_norm} must be positive with augment=True")
    if self.builder not in ("tree_ah", "autopilot"):
      problems.append(f"builder={self.builder!r} must be 'tree_ah' or 'autopilot'")
    if self.reorder < 1:
      problems.append(f"reorder={self.reorder} must be at least 1")
    if self.training_sample_size < self.num_leaves:
      problems.append(f"training_sample_size={self.training_sample_size} must be at least "
                      f"num_leaves={self.num_leaves}")
    if problems:
      raise UserError("Bad ScaNN parameters: " + "; ".join(problems) +
                      ". Use choose_params(num_items, dim) for values that fit the catalogue.")


def choose_params(num_items: int, dim: int, unit_norm: bool = False) -> ScannParams:
  """Parameters for a catalogue of `num_items` vectors of `dim`, aiming at recall@100 >= 0.95;
  `unit_norm` items get spherical leaves (see SPHERICAL_SCAN)."""
  if num_items < EXACT_BELOW:
    return ScannParams(exact=True)
  num_leaves = max(1, round(math.sqrt(num_items)))  # ~sqrt(N) leaves of ~sqrt(N) items each
  scan = SPHERICAL_SCAN if unit_norm else 1.0
  share = scan * max(LEAVES_SEARCHED, MIN_SCANNED / num_items)
  to_search = min(num_leaves, math.ceil(share * num_leaves))
  return ScannParams(num_leaves=num_leaves, num_leaves_to_search=to_search,
                     training_sample_size=min(num_items, 100_000),
                     dims_per_block=min(2, dim), spherical=unit_norm,
                     reorder=SPHERICAL_REORDER if unit_norm else REORDER)


def is_unit_norm(items: np.ndarray) -> bool:
  norms = np.linalg.norm(items[:10_000], axis=1)  # a sample decides: models normalise all or none
  return bool(np.all(np.abs(norms - 1) < 1e-3))


def params_for(items: np.ndarray) -> ScannParams:
  """choose_params for these items: their count, dimension and whether they are unit vectors."""
  return choose_params(*items.shape, unit_norm=is_unit_norm(items))


def _as_matrix(name: str, x, dim: int | None = None) -> np.ndarray:
  x = np.asarray(x)
  if x.ndim != 2 or (dim is not None and x.shape[1] != dim):
    want = f"[n, {dim}]" if dim is not None else "[n, dim]"
    raise UserError(f"{name} has shape {x.shape}, expected {want}.")
  # ScaNN reads the buffer directly: it must be float32 and C-contiguous.
  return np.ascontiguousarray(x, np.float32)


class Retriever:
  """Answers top-k maximum inner product queries over a fixed item matrix."""

  def __init__(self, items: np.ndarray, params: ScannParams, searcher=None):
    if not params.exact and searcher is None:
      raise ValueError("a ScaNN retriever needs its searcher: use build_index or Retriever.load")
    self.items = _as_matrix("items", items)
    self.params = params
    self.searcher = searcher
    self.tuning: dict | None = None  # build_index's report when it tuned this index

  @property
  def num_items(self) -> int:
    return self.items.shape[0]

  @property
  def dim(self) -> int:
    return self.items.shape[1]

  def search(self, queries: np.ndarray, k: int,
             parallel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Top-k item rows for each query [Q, D]: (rows int64 [Q, k'], scores float32 [Q, k']),
    best first, k' = min(k, num_items). ScaNN uses one thread unless `parallel`."""
    if k < 1:
      raise UserError(f"k must be at least 1, got {k}.")
    queries = _as_matrix("queries", queries, self.dim)
    k = min(k, self.num_items)
    if self.params.exact:
      return exact_topk(self.items, queries, k)
    rows, scores = self.approximate(queries, k, self.params.num_leaves_to_search,
                                    self.params.reorder, parallel)
    # When the searched leaves hold fewer than k items, ScaNN returns short rows (one query) or
    # pads with NaN scores (batched): those queries are answered exactly instead.
    if rows.shape[1] < k:
      return exact_topk(self.items, queries, k)
    short = np.isnan(scores).any(axis=1)
    if short.any():
      rows[short], scores[short] = exact_topk(self.items, queries[short], k)
    return rows, scores

  def approximate(self, queries: np.ndarray, k: int, leaves: int, reorder: int,
                  parallel: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """ScaNN's top-k searching `leaves` leaves and re-scoring `reorder` candidates (search-time
    settings: tuning tries them on one built tree). No exact fallback for short rows."""
    pre_reorder = max(reorder, k)
    if self.params.augment:  # the index holds [x, sqrt(M^2 - |x|^2)] / M: append a 0
      queries = np.concatenate([queries, np.zeros((len(queries), 1), np.float32)], axis=1)
    if len(queries) == 1 and not parallel:
      # The single-query entry point skips batching overhead: ~20% more queries/s one at a time.
      row, score = self.searcher.search(queries[0], k, pre_reorder, leaves)
      rows, scores = np.asarray(row)[None], np.asarray(score)[None]
    else:
      search = (self.searcher.search_batched_parallel if parallel
                else self.searcher.search_batched)
      rows, scores = search(queries, k, pre_reorder, leaves)
    rows, scores = np.asarray(rows).astype(np.int64), np.asarray(scores, np.float32)
    if self.params.augment:
      scores = scores * np.float32(self.params.augment_norm)
    return rows, scores

  def save(self, path: str) -> None:
    """Writes the index into directory `path` (created; must not hold an index already)."""
    os.makedirs(path, exist_ok=True)
    if not self.params.exact:
      # Relative asset paths: the directory is renamed into place after writing, and bundles
      # are copied between machines.
      self.searcher.serialize(path, relative_path=True)
    with open(os.path.join(path, PARAMS), "w") as f:
      json.dump(self.params.to_json(), f, indent=2)

  @classmethod
  def load(cls, path: str, items: np.ndarray) -> Retriever:
    """Reads an index written by `save` over the same `items` it was built from."""
    params_path = os.path.join(path, PARAMS)
    if not os.path.exists(params_path):
      raise UserError(f"{path} has no {PARAMS}: it is not a retrieval index. Build one with "
                      "build_index(items, params) and save it.")
    with open(params_path) as f:
      params = ScannParams.from_json(json.load(f))
    if params.exact:
      return cls(items, params)
    import scann  # deferred: importing ScaNN loads TensorFlow, which the exact path never needs
    # No back-compatibility shim: it would write a new assets file into the directory.
    searcher = scann.scann_ops_pybind.load_searcher(path, assets_backcompat_shim=False)
    if searcher.size() != len(items):
      raise UserError(f"The index in {path} holds {searcher.size()} items but {len(items)} were "
                      "given: it was built from other items. Rebuild it with build_index.")
    return cls(items, params, searcher)


def augmented(items: np.ndarray, norm: float) -> np.ndarray:
  """MIPS -> cosine: [x, sqrt(norm^2 - |x|^2)] / norm, unit vectors for items of norm <= norm."""
  squared = np.einsum("ij,ij->i", items, items)
  extra = np.sqrt(np.maximum(norm * norm - squared, 0))[:, None]
  return np.ascontiguousarray(np.concatenate([items, extra], axis=1) / norm, np.float32)


def build_tree(items: np.ndarray, params: ScannParams) -> Retriever:
  """A ScaNN tree-AH index (or brute force with params.exact) over `items` exactly as `params`
  say: no tuning. `build_index` is the entry point that tunes."""
  items = _as_matrix("items", items)
  if not np.isfinite(items).all():
    raise UserError("items contain NaN or infinite values: check the model that produced them.")
  params.check(*items.shape)
  if params.exact:
    return Retriever(items, params)
  import scann  # deferred: see Retriever.load
  indexed = augmented(items, params.augment_norm) if params.augment else items
  builder = scann.scann_ops_pybind.builder(indexed, 10, params.distance)
  if params.builder == "autopilot":
    return Retriever(items, params, builder.autopilot().build())
  searcher = (builder
              .tree(num_leaves=params.num_leaves,
                    num_leaves_to_search=params.num_leaves_to_search,
                    training_sample_size=params.training_sample_size,
                    spherical=params.spherical, soar_lambda=params.soar_lambda,
                    avq=params.avq)
              .score_ah(params.dims_per_block,
                        anisotropic_quantization_threshold=params.anisotropic_quantization_threshold)
              .reorder(params.reorder)
              .build())
  return Retriever(items, params, searcher)


def autopilot_params(num_items: int, dim: int) -> ScannParams | None:
  """What ScaNN's autopilot() would build for this catalogue (None: it would brute-force)."""
  import re

  import scann
  builder = scann.scann_ops_pybind.builder(np.zeros((1, dim), np.float32), 10,
                                           "dot_product").autopilot()
  config = scann.scann_ops_pybind.scann_pybind.ScannNumpy.suggest_autopilot(
      super(type(builder), builder).create_config(), num_items, dim)
  fields = {}
  for key, name, cast in (("num_children", "num_leaves", int),
                          ("max_spill_centers", "num_leaves_to_search", int),
                          ("expected_sample_size", "training_sample_size", int),
                          ("num_dims_per_block", "dims_per_block", int),
                          ("noise_shaping_threshold", "anisotropic_quantization_threshold", float),
                          ("approx_num_neighbors", "reorder", int)):
    found = re.search(rf"\b{key}: ([0-9.eE+-]+)", config)
    if found is None:
      return None
    fields[name] = cast(found.group(1))
  return ScannParams(**fields, spherical="SPHERICAL" in config, builder="autopilot")
