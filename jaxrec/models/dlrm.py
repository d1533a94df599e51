"""A multi-task ranking model in the DLRM family, over sharded embedding tables.

    dense features ─► bottom MLP ─┐
    single-hot ids ─► tables ─────┼─► interaction (dot | DCN-v2 cross | FM | none) ─► top MLP ─► heads
    multi-hot ids ─► tables, pool ┤                                   optional wide part ─┘
    user vector ──► projection ───┘  (optional: a frozen sequence model's query, user_features.py)

One table per sparse feature (models/embedding.py: row-sharded, sparsely updated). The
interaction is DLRM's pairwise dot products (Naumov et al. 2019), DCN-v2 cross layers (Wang et al.
2021), or FM's second-order term kept as a vector (DeepFM / NFM), each fed with the raw features to
a shared top MLP; each task head is one linear output of it. The optional wide part is a linear
model on the same one-hot features (Wide & Deep): one scalar per head per id, plus a linear map of
the dense features. With `deep=False` only the wide part remains: per-head logistic (or linear)
regression, the baseline the ranking benchmark compares against.

The model reads `rows` (the looked-up embedding rows, gathered by the train step so that gradients
are taken with respect to them only) or looks them up itself when not given.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
from flax import nnx

from jaxrec.models.embedding import ShardedEmbedding, pool
from jaxrec.models.layers import Dense
from jaxrec.models.row_optimizers import RowOptimizer

INTERACTIONS = ("dot", "dcn", "fm", "none")
STACKED = "stacked"  # the table small features share


@dataclasses.dataclass(frozen=True)
class DLRMSpec:
  single_hot: dict[str, int]    # feature -> table rows
  multi_hot: dict[str, int]
  num_dense: int
  heads: tuple[str, ...]
  dim: int = 16
  bottom: tuple[int, ...] = (64,)
  top: tuple[int, ...] = (256, 128)
  interaction: str = "dot"
  cross_layers: int = 2
  wide: bool = False
  deep: bool = True
  pooling: str = "sum"
  dropout: float = 0.0
  # Features whose tables have fewer rows share one stacked table (each at its own row offset):
  # one lookup and one row update for all of them instead of one per table, and each device
  # holds whole small tables rather than a sliver of every one.
  stack_below: int = 0
  # Width of a precomputed user vector (`batch["user_embedding"]`, e.g. the foundation model's
  # query; train/user_features.py), projected to `dim` as one more interacting feature; 0 = none.
  user_embedding_dim: int = 0

  def __post_init__(self):
    if self.interaction not in INTERACTIONS:
      raise ValueError(f"unknown interaction {self.interaction!r}: use one of "
                       f"{', '.join(INTERACTIONS)}")
    if not (self.deep or self.wide):
      raise ValueError("a DLRM needs the deep part, the wide part or both")


class MLP(nnx.Module):
  def __init__(self, sizes: tuple[int, ...], *, rngs: nnx.Rngs, dropout: float = 0.0):
    self.layers = nnx.List([Dense(a, b, ("embed", "mlp"), rngs=rngs)
                            for a, b in zip(sizes[:-1], sizes[1:])])
    self.dropout = nnx.Dropout(dropout)

  def __call__(self, x, rngs=None):
    for layer in self.layers:
      x = self.dropout(jax.nn.relu(layer(x)), deterministic=rngs is None, rngs=rngs)
    return x


class CrossLayer(nnx.Module):
  """DCN-v2: x_{l+1} = x0 * (W x_l + b) + x_l."""

  def __init__(self, width: int, *, rngs: nnx.Rngs):
    self.linear = Dense(width, width, ("embed", "mlp"), rngs=rngs)

  def __call__(self, x0, x):
    return x0 * self.linear(x) + x


class DLRM(nnx.Module):
  def __init__(self, spec: DLRMSpec, *, rngs: nnx.Rngs,
               row_optimizer: RowOptimizer | None = None):
    self.spec = spec
    own, offsets, stacked_rows = self._layout()
    sizes = {**own, **({STACKED: stacked_rows} if offsets else {})}
    table = lambda rows, dim: ShardedEmbedding(rows, dim, rngs=rngs, row_optimizer=row_optimizer)
    tables = {}
    # + the bottom MLP's output, + the projected user vector
    num_features = len(spec.single_hot) + len(spec.multi_hot) + 1 + bool(spec.user_embedding_dim)
    if spec.deep:
      tables.update({name: table(rows, spec.dim) for name, rows in sizes.items()})
      self.bottom = MLP((spec.num_dense, *spec.bottom, spec.dim), rngs=rngs)
      if spec.user_embedding_dim:
        self.user_projection = Dense(spec.user_embedding_dim, spec.dim, ("embed", "mlp"),
                                     rngs=rngs)
      width = num_features * spec.dim
      if spec.interaction == "dot":
        width = spec.dim + num_features * (num_features - 1) // 2
      elif spec.interaction == "fm":
        width += spec.dim
      self.cross = nnx.List([CrossLayer(width, rngs=rngs) for _ in range(
          spec.cross_layers if spec.interaction == "dcn" else 0)])
      self.top = MLP((width, *spec.top), rngs=rngs, dropout=spec.dropout)
      self.heads = Dense(spec.top[-1] if spec.top else width, len(spec.heads), ("mlp", None),
                         rngs=rngs)
    if spec.wide:
      # One scalar per head for every id of every feature: logistic regression on one-hots.
      tables.update({f"wide_{name}": table(rows, len(spec.heads)) for name, rows in sizes.items()})
      self.wide_dense = nnx.Linear(spec.num_dense, len(spec.heads), rngs=rngs)
      if spec.user_embedding_dim:
        self.wide_user = nnx.Linear(spec.user_embedding_dim, len(spec.heads), rngs=rngs)
    self.tables = nnx.Dict(tables)

  def _layout(self) -> tuple[dict[str, int], dict[str, int], int]:
    """Features with their own table {name: rows}, stacked features {name: row offset}, and the
    stacked table's rows."""
    sizes = {**self.spec.single_hot, **self.spec.multi_hot}
    own = {n: rows for n, rows in sizes.items() if rows >= self.spec.stack_below}
    offsets, total = {}, 0
    for name in sizes:
      if name not in own:
        offsets[name], total = total, total + sizes[name]
    return own, offsets, total

  def _prefixes(self) -> tuple[str, ...]:
    return ("",) * self.spec.deep + ("wide_",) * self.spec.wide

  def embedding_ids(self, batch: dict) -> dict[str, jax.Array]:
    """Each table's ids in this batch: [B] for single-hot features, [B, H] for multi-hot, and
    [B, sum of widths] for the stacked table."""
    features = {**batch["sparse"], **batch["multi_hot"]}
    own, offsets, _ = self._layout()
    ids = {name: features[name] for name in own}
    if offsets:
      ids[STACKED] = jnp.concatenate([jnp.reshape(features[n], (len(batch["dense"]), -1)) + offset
                                      for n, offset in offsets.items()], 1)
    return {prefix + name: value for prefix in self._prefixes() for name, value in ids.items()}

  def _feature_rows(self, batch: dict, rows: dict, prefix: str) -> dict[str, jax.Array]:
    """Each feature's rows ([B, D] single-hot, [B, H, D] multi-hot) from the tables' lookups."""
    own, offsets, _ = self._layout()
    out = {name: rows[prefix + name] for name in own}
    start = 0
    for name in offsets:
      single = name in self.spec.single_hot
      width = 1 if single else batch["multi_hot"][name].shape[1]
      part = rows[prefix + STACKED][:, start:start + width]
      out[name] = part[:, 0] if single else part
      start += width
    return out

  def __call__(self, batch: dict, rows: dict | None = None, rngs: nnx.Rngs | None = None):
    """Per-head outputs (logits, or the regression value) [B, heads]."""
    if rows is None:
      rows = {name: self.tables[name](ids) for name, ids in self.embedding_ids(batch).items()}
    spec = self.spec
    weights = batch.get("multi_hot_weights", {})
    pooled = lambda name, rows: pool(rows, batch["multi_hot"][name], weights.get(name),
                                     spec.pooling)
    out = 0.0
    if spec.deep:
      deep = self._feature_rows(batch, rows, "")
      features = [self.bottom(batch["dense"]), *[deep[n] for n in spec.single_hot],
                  *[pooled(n, deep[n]) for n in spec.multi_hot]]
      if spec.user_embedding_dim:
        features.append(self.user_projection(batch["user_embedding"]))
      out = self.heads(self.top(self._interact(features), rngs))
    if spec.wide:
      wide = self._feature_rows(batch, rows, "wide_")
      out = out + self.wide_dense(batch["dense"])
      if spec.user_embedding_dim:
        out = out + self.wide_user(batch["user_embedding"])
      out = out + sum(wide[n] for n in spec.single_hot)
      out = out + sum((pooled(n, wide[n]) for n in spec.multi_hot), 0.0)
    return out

  def _interact(self, features: list[jax.Array]) -> jax.Array:
    stacked = jnp.stack(features, 1)  # [B, F, D]
    flat = stacked.reshape(len(stacked), -1)
    if self.spec.interaction == "dot":
      dots = jnp.einsum("bfd,bgd->bfg", stacked, stacked)
      upper = jnp.triu_indices(stacked.shape[1], k=1)
      return jnp.concatenate([features[0], dots[:, upper[0], upper[1]]], -1)
    if self.spec.interaction == "fm":
      second_order = 0.5 * (jnp.square(stacked.sum(1)) - jnp.square(stacked).sum(1))
      return jnp.concatenate([flat, second_order], -1)
    x = flat
    for layer in self.cross:
      x = layer(flat, x)
    return x
