"""Multi-host set-up: `jax.distributed.initialize` when, and only when, this process is one of many.

Call `initialize()` first thing in a training entry point, before any JAX computation (JAX refuses
to join a cluster once a backend is running). It decides from the environment:

  JAXREC_COORDINATOR=10.0.0.2:1234 JAXREC_NUM_PROCESSES=4 JAXREC_PROCESS_ID=0 jaxrec train ...
      an explicit GPU/CPU cluster: all three variables on every process, each its own id.
  TPU_WORKER_HOSTNAMES=host0,host1,...  (or TPU_PROCESS_ADDRESSES), as GKE sets them
      a TPU pod slice: JAX finds the coordinator itself, so initialize() gets no arguments.
  JAXREC_DISTRIBUTED=auto
      let JAX detect the cluster (TPU VM metadata, SLURM, Open MPI). On a GCE TPU VM the worker
      list lives only in the metadata server, so launchers/tpu.py sets this on every worker.
  JAXREC_DISTRIBUTED=off
      never initialize, whatever else is set.
  none of these: a single host; nothing is done.

Input sharding per process is `Partitioner.shard_inputs` (jax.make_array_from_process_local_data).
"""

from __future__ import annotations

import dataclasses
import os

import jax

from jaxrec.errors import UserError

_EXPLICIT = ("JAXREC_COORDINATOR", "JAXREC_NUM_PROCESSES", "JAXREC_PROCESS_ID")
_EXAMPLE = "JAXREC_COORDINATOR=10.0.0.2:1234 JAXREC_NUM_PROCESSES=4 JAXREC_PROCESS_ID=<0..3>"
# jax.distributed.initialize may run once per process; a second call would raise.
_done: DistributedInfo | None = None


@dataclasses.dataclass(frozen=True)
class DistributedInfo:
  initialized: bool  # whether jax.distributed is initialized (by this module or before it)
  mode: str  # "single-host", "explicit", "tpu-pod", "auto" or "external"
  process_index: int
  process_count: int


def initialize(coordinator: str | None = None, num_processes: int | None = None,
               process_id: int | None = None) -> DistributedInfo:
  """Joins the multi-host job this process belongs to, if any; arguments override the env."""
  global _done
  if _done is not None:
    return _done
  if jax.distributed.is_initialized():  # someone (a notebook, a test harness) got here first
    _done = DistributedInfo(True, "external", jax.process_index(), jax.process_count())
    return _done
  switch = os.environ.get("JAXREC_DISTRIBUTED", "").strip().lower()
  if switch not in ("", "auto", "off"):
    raise UserError(f"JAXREC_DISTRIBUTED={switch!r} is not understood; set it to 'auto' (let JAX "
                    "detect the cluster), 'off' (never initialize) or unset it")
  if switch == "off":
    return DistributedInfo(False, "single-host", 0, 1)
  explicit = _explicit_settings(coordinator, num_processes, process_id)
  if explicit is not None:
    address, count, index = explicit
    jax.distributed.initialize(coordinator_address=address, num_processes=count, process_id=index)
    _done = DistributedInfo(True, "explicit", index, count)
  elif _several("TPU_WORKER_HOSTNAMES") or _several("TPU_PROCESS_ADDRESSES") or switch == "auto":
    jax.distributed.initialize()
    mode = "auto" if switch == "auto" else "tpu-pod"
    _done = DistributedInfo(True, mode, jax.process_index(), jax.process_count())
  else:
    # Not remembered: a later call with settings (a test, a notebook) may still initialize.
    return DistributedInfo(False, "single-host", 0, 1)
  return _done


def _several(name: str) -> bool:
  return len([h for h in os.environ.get(name, "").split(",") if h.strip()]) > 1


def _explicit_settings(coordinator, num_processes, process_id) -> tuple[str, int, int] | None:
  given = [coordinator, num_processes, process_id]
  values = [(os.environ.get(name, "").strip() or None) if value is None else value
            for name, value in zip(_EXPLICIT, given)]
  if all(v is None for v in values):
    return None
  missing = [name for name, v in zip(_EXPLICIT, values) if v is None]
  if missing:
    present = [name for name, v in zip(_EXPLICIT, values) if v is not None]
    raise UserError(f"{' and '.join(present)} set but {' and '.join(missing)} not: a multi-host "
                    f"run needs all three on every process, e.g. {_EXAMPLE}; or unset "
                    f"{' and '.join(present)} for a single-host run")
  address, count, index = (str(v) for v in values)
  host, _, port = address.rpartition(":")
  if not host or not port.isdigit():
    raise UserError(f"JAXREC_COORDINATOR={address!r} is not host:port; use the address of "
                    "process 0 and a free port, e.g. 10.0.0.2:1234")
  if not count.isdigit() or int(count) < 1:
    raise UserError(f"JAXREC_NUM_PROCESSES={count!r} is not a positive integer; set it to the "
                    "number of processes (usually hosts) in the job, e.g. 4")
  if not index.isdigit() or int(index) >= int(count):
    raise UserError(f"JAXREC_PROCESS_ID={index!r} is not an integer in 0..{int(count) - 1}; give "
                    "each process its own id, 0 on the coordinator's host")
  return address, int(count), int(index)
