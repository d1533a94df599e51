"""The mesh and jit live behind one object, so data- vs model-parallel is a config field.

Parameters carry logical axis names ("vocab", "embed", "mlp", "heads"); `rules` maps each name to
a mesh axis (or None: replicated). Batches are split over the "data" axis. State is built from
shapes (`nnx.eval_shape`) and materialised by a jit with `out_shardings`, so a table larger than
one device is never built on one device first.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Callable

import jax
import numpy as np
from flax import nnx
from jax.sharding import NamedSharding, PartitionSpec as P

from jaxrec.errors import UserError

BATCH_AXIS = "data"
MODEL_AXIS = "model"
DEFAULT_AXES = (BATCH_AXIS, MODEL_AXIS)
# The one statement of how logical axes map to mesh axes; configs start from it (defaults.py).
DEFAULT_RULES = {"vocab": MODEL_AXIS, "embed": None, "mlp": MODEL_AXIS, "heads": MODEL_AXIS}
# The rules of the partitioner whose jit is tracing: code inside a model (the sharded lookup)
# reads its mesh axis from them rather than having it passed down through every constructor.
_RULES = contextvars.ContextVar("jaxrec_axis_rules", default=DEFAULT_RULES)


def mesh_axis(logical: str) -> str | None:
  """The mesh axis the current partitioner's rules map a logical axis name to."""
  return _RULES.get().get(logical)


@contextlib.contextmanager
def axis_rules(rules: dict[str, str | None]):
  token = _RULES.set(dict(rules))
  try:
    yield
  finally:
    _RULES.reset(token)


def axis_size(axis: str | None, dim: int) -> int:
  """Devices on the current mesh's `axis` when they divide `dim` (the partitioner's rule), else 1."""
  mesh = jax.sharding.get_abstract_mesh()
  if axis is None or mesh.empty or axis not in mesh.axis_names:
    return 1
  size = mesh.shape[axis]
  return size if dim % size == 0 else 1


def batch_spec(x: jax.Array) -> P:
  """How a batch array is laid out: split over the data axis when it divides the batch."""
  return P(BATCH_AXIS) if axis_size(BATCH_AXIS, x.shape[0]) > 1 else P()


class Partitioner:
  def __init__(self, mesh_shape=(-1, 1), axis_names=DEFAULT_AXES,
               rules: dict[str, str | None] | None = None, devices=None):
    devices = list(devices if devices is not None else jax.devices())
    shape = list(mesh_shape)
    if shape.count(-1) > 1 or len(shape) != len(axis_names):
      raise UserError(f"mesh shape {tuple(mesh_shape)} must have one entry per axis "
                      f"{tuple(axis_names)}, with at most one -1.")
    known = int(np.prod([s for s in shape if s != -1]))
    if -1 in shape:
      shape[shape.index(-1)] = len(devices) // known
    if int(np.prod(shape)) != len(devices):
      raise UserError(f"mesh shape {tuple(mesh_shape)} does not fit the {len(devices)} devices "
                      "here: make the product of the axes equal the device count (use -1 for one "
                      "axis to take the rest).")
    self.mesh = jax.sharding.Mesh(np.array(devices).reshape(shape), tuple(axis_names))
    self.rules = dict(DEFAULT_RULES if rules is None else rules)

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, P())

  @property
  def data_sharding(self) -> NamedSharding:
    """Leading (batch) dimension split over "data"; a prefix for every leaf of a batch."""
    return NamedSharding(self.mesh, P(BATCH_AXIS))

  def _mesh_spec(self, logical: P, shape: tuple[int, ...]) -> NamedSharding:
    axes = []
    for name, size in zip(tuple(logical) + (None,) * (len(shape) - len(logical)), shape):
      axis = self.rules.get(name) if name else None
      # A dimension the mesh axis does not divide stays whole rather than failing.
      if axis is not None and (axis not in self.mesh.shape or size % self.mesh.shape[axis]):
        axis = None
      axes.append(axis)
    return NamedSharding(self.mesh, P(*axes))

  def state_shardings(self, abstract_state):
    specs = nnx.get_partition_spec(abstract_state)
    return jax.tree.map(lambda spec, x: self._mesh_spec(spec, x.shape), specs, abstract_state,
                        is_leaf=lambda x: isinstance(x, P))

  def abstract(self, build: Callable[[], nnx.Module]):
    """A model's (graphdef, state of ShapeDtypeStructs placed on the mesh): the target a
    checkpoint restores onto, with nothing materialised."""
    with nnx.use_eager_sharding(False):
      graphdef, abstract_state = nnx.split(nnx.eval_shape(build))
    shardings = self.state_shardings(abstract_state)
    return graphdef, jax.tree.map(
        lambda x, sharding: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=sharding),
        abstract_state, shardings)

  def init(self, build: Callable[[], nnx.Module]):
    """Builds a model's state sharded over the mesh. Returns (graphdef, state, shardings)."""
    with nnx.use_eager_sharding(False):
      abstract = nnx.eval_shape(build)
      graphdef, abstract_state = nnx.split(abstract)
      shardings = self.state_shardings(abstract_state)
      state = jax.jit(lambda: nnx.split(build())[1], out_shardings=shardings)()
    return graphdef, state, shardings

  def jit(self, fn, **jit_kwargs):
    """`jax.jit(fn)` whose calls run (and trace) with this mesh and these rules current, so code
    inside can ask for them (`jax.sharding.get_abstract_mesh()`, `mesh_axis`): the sharded
    embedding lookups and updates do."""
    jitted = jax.jit(fn, **jit_kwargs)

    def call(*args):
      with jax.set_mesh(self.mesh), axis_rules(self.rules):
        return jitted(*args)

    return call

  def batch_sharding(self, batch):
    return jax.tree.map(lambda x: NamedSharding(self.mesh, P(BATCH_AXIS, *([None] * (x.ndim - 1)))),
                        batch)

  def shard_inputs(self, batch):
    """Host batch -> global arrays split over "data". Each process passes its own part."""
    shardings = self.batch_sharding(batch)
    if jax.process_count() == 1:
      return jax.device_put(batch, shardings)
    return jax.tree.map(jax.make_array_from_process_local_data, shardings, batch)

  def check_batch_size(self, batch_size: int) -> None:
    data = self.mesh.shape.get("data", 1)
    if batch_size % data:
      raise UserError(f"batch size {batch_size} does not split over the {data} devices of the "
                      "data axis: use a multiple of it.")
