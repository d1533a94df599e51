"""A bundle's models rebuilt in the serving process, from their exported parameters.

Each model comes back as its training task (which knows how to read its inputs) with its state
on one local device: the export wrote host arrays, so a model trained on any mesh loads here.
"""

from __future__ import annotations

import dataclasses
import json
import os

import jax
import ml_collections
import orbax.checkpoint as ocp
from flax import nnx

from jaxrec.errors import UserError
from jaxrec.parallel.partitioner import Partitioner
from jaxrec.retrieval.export import CONFIG, PARAMS, USER_ENCODER
from jaxrec.train.trainer import build_task


@dataclasses.dataclass
class LoadedModel:
  task: object
  graphdef: object
  state: object
  partitioner: Partitioner

  def jit(self, method: str):
    """task.<method>(model, batch) as a jitted function of the batch."""
    fn = getattr(self.task, method)
    jitted = self.partitioner.jit(lambda state, batch: fn(nnx.merge(self.graphdef, state), batch))
    return lambda batch: jitted(self.state, batch)


def load_model(model_dir: str, dataset_dir: str) -> LoadedModel:
  """The model saved in `model_dir` (config.json + Orbax params) reading `dataset_dir`."""
  try:
    with open(os.path.join(model_dir, CONFIG)) as f:
      config = ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as e:
    raise UserError(f"{model_dir}: cannot read {CONFIG} ({e}); export the bundle again.") from e
  config.data.dir = dataset_dir
  if config.get("model", {}).get("user_embedding_from"):  # a ranker's encoder, exported beside it
    config.model.user_embedding_from = os.path.join(model_dir, USER_ENCODER)
  config.mesh.shape = (1,) * len(config.mesh.axes)  # one device answers a request
  task = build_task(config)
  partitioner = Partitioner(tuple(config.mesh.shape), tuple(config.mesh.axes),
                            dict(config.mesh.rules), devices=jax.local_devices()[:1])
  graphdef, state, _ = partitioner.init(lambda: task.build_model(nnx.Rngs(config.seed)))
  restored = ocp.StandardCheckpointer().restore(os.path.join(model_dir, PARAMS))
  nnx.replace_by_pure_dict(state, restored)
  state = jax.device_put(state, jax.local_devices()[0])
  return LoadedModel(task, graphdef, state, partitioner)
