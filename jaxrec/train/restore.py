"""A trained model without its training run: the task and the model's parameters, restored
alone (no optimizer state, no train step), for inference — export, `jaxrec eval`, the ranker's
user encoder and serving all read models through here.

Two sources: a training workdir (its best checkpoint by the validation metric, onto the devices
of this process) and an exported model directory (a bundle's query encoder or ranker: the config
that rebuilds it and its parameters as host arrays).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os

import jax
import ml_collections
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

from jaxrec.config import save_config
from jaxrec.errors import UserError
from jaxrec.parallel.partitioner import Partitioner
from jaxrec.retrieval.bundle import MODEL_CONFIG, MODEL_PARAMS, USER_ENCODER
from jaxrec.train.checkpoint import Checkpointer
from jaxrec.train.evaluator import Evaluator
from jaxrec.train.tasks import BASELINE, build_task


@dataclasses.dataclass
class TrainedModel:
  config: ml_collections.ConfigDict
  task: object
  graphdef: object
  state: object
  partitioner: Partitioner
  step: int | None = None  # the checkpoint's step (None for an exported model)
  _evaluator: Evaluator | None = dataclasses.field(default=None, repr=False)

  def evaluate(self, split: str, row_weight=None, lists=None) -> dict:
    """Metrics over a split (evaluator.Evaluator, compiled on first use)."""
    if self._evaluator is None:
      self._evaluator = Evaluator(self.task, self.partitioner, self.graphdef)
    return self._evaluator(self.state, split, row_weight, lists)

  def model(self) -> nnx.Module:
    return nnx.merge(self.graphdef, self.state)

  def jit(self, method: str):
    """task.<method>(model, batch) as a jitted function of the batch."""
    fn = getattr(self.task, method)
    jitted = self.partitioner.jit(lambda state, batch: fn(nnx.merge(self.graphdef, state), batch))
    return lambda batch: jitted(self.state, batch)


def load_workdir_config(workdir: str) -> ml_collections.ConfigDict:
  path = os.path.join(workdir, "config.json")
  if not os.path.exists(path):
    raise UserError(f"{workdir} has no config.json: it is not a training workdir. Train with "
                    "`jaxrec train --config configs/FILE.py --workdir DIR` first.")
  with open(path) as f:
    return ml_collections.ConfigDict(json.load(f))


def fit_mesh(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """The run's config with a mesh this process can build: a workdir trained on a pod slice
  (mesh (4, 8)) restores onto the devices here, every one on the data axis, when its mesh does
  not fit them. Orbax reshards the checkpoint onto whatever mesh it is given."""
  fixed = int(np.prod([s for s in config.mesh.shape if s != -1]))
  if jax.device_count() % fixed == 0:
    return config
  logging.info("the run's mesh %s does not fit the %d devices here: restoring onto (-1, 1)",
               tuple(config.mesh.shape), jax.device_count())
  config = ml_collections.ConfigDict(config.to_dict())
  config.mesh.shape = (-1,) + (1,) * (len(config.mesh.axes) - 1)
  return config


def best_step(workdir: str, config=None) -> int:
  """The workdir's best checkpoint step (the latest when none is marked best)."""
  config = config or load_workdir_config(workdir)
  checkpoints = Checkpointer(workdir, config.train.keep_checkpoints, config.train.metric)
  step = checkpoints.best_step() or checkpoints.latest_step()
  checkpoints.close()
  if step is None:
    raise UserError(f"{workdir} has no checkpoint yet: let `jaxrec train` run to its first "
                    "evaluation.")
  return step


def checkpoint_reader(workdir: str) -> ocp.CheckpointManager:
  """Reads a workdir's checkpoints item by item (and their metadata), never writing."""
  return ocp.CheckpointManager(
      os.path.abspath(workdir) + "/checkpoints", item_names=("state", "loop"),
      item_handlers={"state": ocp.PyTreeCheckpointHandler(),
                     "loop": ocp.JsonCheckpointHandler()})


def read_model_state(workdir: str, step: int, target):
  """The model part of checkpoint `step`, restored onto `target`'s shapes and shardings; the
  optimizer state beside it (twice its size) is never read."""
  target = {"model": target}
  with checkpoint_reader(workdir) as manager:
    return manager.restore(step, args=ocp.args.Composite(state=ocp.args.PyTreeRestore(
        item=target, restore_args=ocp.checkpoint_utils.construct_restore_args(target),
        partial_restore=True))).state["model"]


def _partitioner(config, devices=None) -> Partitioner:
  return Partitioner(tuple(config.mesh.shape), tuple(config.mesh.axes), dict(config.mesh.rules),
                     devices=devices)


def restore_model(workdir: str, config: ml_collections.ConfigDict | None = None) -> TrainedModel:
  """The workdir's model at its best checkpoint, on this process's devices; `config` (default:
  the workdir's config.json) is that config with settings that leave the parameters alone changed
  (evaluate.with_eval_overrides: the evaluation protocol)."""
  config = fit_mesh(load_workdir_config(workdir) if config is None else config)
  if config.task == BASELINE:
    raise UserError(f"{workdir} holds a {config.model.name} baseline, fitted in closed form: it "
                    "has no checkpoint or embeddings to load. Export a two_tower, sequential or "
                    "bpr workdir.")
  step = best_step(workdir, config)
  task = build_task(config)
  partitioner = _partitioner(config)
  graphdef, target = partitioner.abstract(lambda: task.build_model(nnx.Rngs(config.seed)))
  state = read_model_state(workdir, step, target)
  return TrainedModel(config, task, graphdef, state, partitioner, step)


def load_exported(model_dir: str, dataset_dir: str) -> TrainedModel:
  """The model exported in `model_dir` (config.json + params) reading `dataset_dir`, on one
  local device: the export wrote host arrays, so a model trained on any mesh loads here."""
  try:
    with open(os.path.join(model_dir, MODEL_CONFIG)) as f:
      config = ml_collections.ConfigDict(json.load(f))
  except (OSError, ValueError) as e:
    raise UserError(f"{model_dir}: cannot read {MODEL_CONFIG} ({e}); export the bundle "
                    "again.") from e
  config.data.dir = dataset_dir
  if config.get("model", {}).get("user_embedding_from"):  # a ranker's encoder, exported beside it
    config.model.user_embedding_from = os.path.join(model_dir, USER_ENCODER)
  config.mesh.shape = (1,) * len(config.mesh.axes)  # one device answers a request
  task = build_task(config)
  device = jax.local_devices()[0]
  partitioner = _partitioner(config, devices=[device])
  # The shapes only: every value comes from the export. Initialising the parameters first
  # traced and ran the model's init only to overwrite it, holding the GIL a serving process's
  # live requests need for ~0.7 s a model during a reload.
  graphdef, state = partitioner.abstract(lambda: task.build_model(nnx.Rngs(config.seed)))
  restored = ocp.StandardCheckpointer().restore(os.path.join(model_dir, MODEL_PARAMS))
  nnx.replace_by_pure_dict(state, restored)
  return TrainedModel(config, task, graphdef, jax.device_put(state, device), partitioner)


def save_exported(model: TrainedModel, out_dir: str) -> None:
  """A model's parameters (Orbax, host arrays: they restore onto any mesh, or none) and the
  config that rebuilds it, as load_exported reads them."""
  checkpointer = ocp.StandardCheckpointer()
  checkpointer.save(os.path.join(out_dir, MODEL_PARAMS),
                    jax.device_get(nnx.to_pure_dict(model.state)))
  checkpointer.wait_until_finished()
  save_config(model.config, os.path.join(out_dir, MODEL_CONFIG))
