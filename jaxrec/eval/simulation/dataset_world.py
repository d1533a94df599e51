"""Which synthetic world a prepared dataset, and so a model trained on it, belongs to: the world a
policy must be simulated or evaluated in."""

from __future__ import annotations

import dataclasses

from jaxrec.data.storage import read_manifest
from jaxrec.data.synthetic import SyntheticConfig
from jaxrec.errors import UserError


def synthetic_config_of(dataset_dir: str, model_config=None) -> SyntheticConfig:
  """The generator config a prepared dataset was made from: its manifest's `source_config`, or,
  for datasets prepared before that was recorded, the training config's `data.synthetic`."""
  manifest = read_manifest(dataset_dir)
  if manifest.get("dataset") != "synthetic":
    raise UserError(f"{dataset_dir} holds the {manifest.get('dataset')!r} dataset: the simulator "
                    "is the synthetic generator's world, so the policy must be trained on a dataset "
                    "prepared with `--dataset synthetic`.")
  if "source_config" in manifest:
    return SyntheticConfig(**manifest["source_config"])
  data = (model_config or {}).get("data", {})
  if data.get("dataset") == "synthetic":
    return SyntheticConfig(**dict(data.get("synthetic") or {}))
  raise UserError(f"{dataset_dir} does not record the synthetic config it was generated with; "
                  "prepare it again with this jaxrec (`jaxrec data prepare --dataset synthetic`).")


def check_same_world(expected: SyntheticConfig, got: SyntheticConfig, what: str) -> None:
  a, b = dataclasses.asdict(expected), dataclasses.asdict(got)
  diff = {k: (a[k], b[k]) for k in a if a[k] != b[k] and k != "chunk_users"}
  if diff:
    raise UserError(f"{what} was trained on a different synthetic world than the log's "
                    f"(field: log vs policy) {diff}; use a policy trained on the log's dataset.")
