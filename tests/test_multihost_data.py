"""Issue 23 at two hosts: two real processes joined by jax.distributed through jaxrec's
JAXREC_* variables (one CPU device each) train from 4 token shards, each opening only its own;
and a missing data.dir prepared by a Beam runner from the config (data.runner).

Which files a process opens is watched from outside it, with Linux inotify on a per-host copy of
each dataset (a process reads only its own copy, as a host reads its own disk): any open counts,
whichever code path makes it (Grain's source, a TokenReader, a stray np.load), with no change to
jaxrec and no patching in the workers.
"""

import ctypes
import json
import os
import shutil
import socket
import struct
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxrec.config import apply_overrides
from jaxrec.data import shards
from jaxrec.data.prepare import PrepareOptions, open_or_prepare, prepare
from jaxrec.data.sources import load_raw
from jaxrec.data.tabular import parse_column_mapping
from jaxrec.errors import UserError
from jaxrec.train.defaults import sequential_config

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COLUMNS = "user=uid,item=movie,timestamp=ts"
NUM_SHARDS = 4
# 598 users take ids 2..599; ids 600..607 all hash to shards 1 and 3, process 1's of 2
# (found by search; asserted below), so 8 more users are more data for process 1 only.
BASE_USERS, EXTRA_USERS = 598, 8
EVENTS_PER_USER = 12


def _write_log(path, extra: bool):
  """Every user has 12 events on distinct items, so ties put user ids in raw id order, and the
  extra users (raw ids after every other, on items of their own seen <= 3 times) come last in
  both vocabularies: the first 598 users and the 40 items keep their ids and tokens."""
  rng = np.random.default_rng(0)
  lines = ["uid,movie,ts"]
  for u in range(BASE_USERS):
    for k, item in enumerate(rng.choice(40, EVENTS_PER_USER, replace=False)):
      lines.append(f"{u},{item},{1_600_000_000 + 37 * u + 3600 * k}")
  if extra:
    for u in range(BASE_USERS, BASE_USERS + EXTRA_USERS):
      for k in range(EVENTS_PER_USER):
        lines.append(f"{u},{1000 + (u * EVENTS_PER_USER + k) % 32},{1_600_000_000 + 3600 * k}")
  path.write_text("\n".join(lines) + "\n")
  return str(path)


def _prepare(tmp_path, name, extra):
  raw = load_raw("csv", path=_write_log(tmp_path / f"{name}.csv", extra),
                 columns=parse_column_mapping(COLUMNS))
  return prepare(raw, str(tmp_path / name), PrepareOptions(shards=NUM_SHARDS))


class _Inotify:
  """The files opened in watched directories (IN_OPEN), by anyone; Linux only."""
  IN_OPEN, IN_NONBLOCK = 0x20, 0o4000

  def __init__(self):
    self.libc = ctypes.CDLL(None, use_errno=True)
    self.fd = self.libc.inotify_init1(self.IN_NONBLOCK)
    if self.fd < 0:
      pytest.skip(f"inotify is not available here (errno {ctypes.get_errno()})")
    self.dirs = {}

  def watch(self, folder: str) -> None:
    wd = self.libc.inotify_add_watch(self.fd, folder.encode(), self.IN_OPEN)
    assert wd >= 0, f"inotify_add_watch({folder}) failed: errno {ctypes.get_errno()}"
    self.dirs[wd] = folder

  def opened(self) -> dict[str, set[str]]:
    seen = {folder: set() for folder in self.dirs.values()}
    while True:
      try:
        data = os.read(self.fd, 1 << 16)
      except BlockingIOError:
        return seen
      offset = 0
      while offset < len(data):
        wd, mask, _, size = struct.unpack_from("iIII", data, offset)
        name = data[offset + 16:offset + 16 + size].rstrip(b"\0").decode()
        offset += 16 + size
        if wd in self.dirs and mask & self.IN_OPEN and name:
          seen[self.dirs[wd]].add(name)

  def close(self) -> None:
    os.close(self.fd)


WORKER = r"""
import hashlib, json, sys, time
T0 = time.time()
from jaxrec.parallel.distributed import initialize
info = initialize()  # JAXREC_COORDINATOR / _NUM_PROCESSES / _PROCESS_ID, as `jaxrec train` does
import jax, jax.numpy as jnp, numpy as np
from jax.experimental import multihost_utils
from jaxrec.data import pipelines as P
from jaxrec.data.storage import PreparedDataset
from jaxrec.train.defaults import sequential_config, smoke
from jaxrec.train.trainer import Run

args = json.loads(sys.argv[1])
config = smoke(sequential_config())
config.data.dataset, config.data.dir = "csv", args["train_dir"]
config.model.max_len, config.model.num_layers = 12, 1
config.train.batch_size, config.eval.batch_size = 32, 64
print('imports+init', time.time()-T0, flush=True)
run = Run(config)  # the sequential task opens data.dir through open_or_prepare
it = iter(run.task.train_data(config.seed))
losses, users = [], []
for step in range(1, args["steps"] + 1):
  batch = next(it)
  users += np.asarray(batch["user"]).tolist()
  run.state, run.opt_state, out = run.train_step(run.state, run.opt_state,
                                                 run.partitioner.shard_inputs(batch),
                                                 jnp.int32(step))
  losses.append(float(np.asarray(out["loss"].addressable_data(0))))
print('run+steps', time.time()-T0, flush=True)
valid = run.evaluate("valid")
print('valid', time.time()-T0, flush=True)
digest = hashlib.sha256()
for leaf in jax.tree.leaves(run.state):
  digest.update(np.ascontiguousarray(multihost_utils.process_allgather(leaf, tiled=True)).tobytes())

sizes = {}
real_index = P._index_dataset
for name in ("a_dir", "b_dir"):
  ds = PreparedDataset(args[name])
  for kind, build in (("pairs", lambda o: P.pair_dataset(ds, options=o)),
                      ("ranking", lambda o: P.ranking_dataset(ds, negatives_per_positive=1,
                                                              options=o))):
    captured = []
    P._index_dataset = lambda idx, *a, **k: (captured.append(len(idx)), real_index(idx, *a, **k))[1]
    data = build(P.PipelineOptions(batch_size=16, num_epochs=None))
    P._index_dataset = real_index
    next(iter(data))  # reads its records: the sources open their files
    sizes[f"{name}/{kind}"] = captured[0]
print('pipelines', time.time()-T0, flush=True)
json.dump({"info": [info.process_index, info.process_count, info.mode],
           "devices": [jax.local_device_count(), jax.device_count()],
           "losses": losses, "users": users, "valid": valid, "params": digest.hexdigest(),
           "index_sizes": sizes}, open(args["out"], "w"))
"""


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@pytest.mark.slow
def test_two_processes_train_from_their_own_shards(tmp_path):
  a = _prepare(tmp_path, "a", extra=False)
  b = _prepare(tmp_path, "b", extra=True)
  # The set-up holds: B adds 8 users, all in process 1's shards, and changes no one else's ids.
  new_ids = np.arange(BASE_USERS, BASE_USERS + EXTRA_USERS) + 2
  assert (shards.shard_of(new_ids, NUM_SHARDS) % 2 == 1).all()
  assert b.num_users == a.num_users + EXTRA_USERS
  for vocab in ("user", "item"):
    n = len(a.vocabs[vocab].raw_ids)
    assert (b.vocabs[vocab].raw_ids[:n] == a.vocabs[vocab].raw_ids).all()
  part_a, part_b = a.host_part(1, 2), b.host_part(1, 2)
  assert len(part_b.records) == len(part_a.records) + EXTRA_USERS

  watcher = _Inotify()
  copies = {}
  for host in (0, 1):  # each host's own copy, watched from here
    for name, ds in (("a", a), ("b", b)):
      copies[host, name] = shutil.copytree(ds.path, tmp_path / f"host{host}" / name)
      watcher.watch(str(copies[host, name]))
  env = {k: v for k, v in os.environ.items()
         if not k.startswith(("JAXREC_", "TPU_")) and k != "XLA_FLAGS"}  # one CPU device each
  env.update(JAX_PLATFORMS="cpu", PYTHONPATH=ROOT, JAXREC_NUM_PROCESSES="2",
             JAXREC_COORDINATOR=f"127.0.0.1:{_free_port()}")
  procs, outs = [], []
  started = time.time()
  for host in (0, 1):
    outs.append(tmp_path / f"out{host}.json")
    # One data.dir spelling on every host, as one config gives them, each resolving to the
    # host's own copy.
    args = {"train_dir": "a", "a_dir": "a", "b_dir": "b", "out": str(outs[-1]), "steps": 4}
    procs.append(subprocess.Popen([sys.executable, "-c", WORKER, json.dumps(args)],
                                  env={**env, "JAXREC_PROCESS_ID": str(host)},
                                  cwd=tmp_path / f"host{host}",
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
  logs = []
  try:
    for proc in procs:
      logs.append(proc.communicate(timeout=300)[0])
  finally:
    for proc in procs:
      if proc.poll() is None:
        proc.kill()
  for host, (proc, log) in enumerate(zip(procs, logs)):
    assert proc.returncode == 0, f"process {host} exited {proc.returncode}:\n{log[-4000:]}"
  print(f"two processes: {time.time() - started:.1f} s")
  result = [json.loads(out.read_text()) for out in outs]
  opened = watcher.opened()
  watcher.close()

  for host in (0, 1):
    assert result[host]["info"] == [host, 2, "explicit"]
    assert result[host]["devices"] == [1, 2]
    # (a) Of the token files, each process opened exactly its own shards k % 2 == host, in the
    # dataset it trained on and in the other one; it did open the rest of its copy.
    mine = {shards.SHARD_NAME.format(k, NUM_SHARDS) for k in range(host, NUM_SHARDS, 2)}
    for name in ("a", "b"):
      files = opened[str(copies[host, name])]
      assert {f for f in files if f.startswith("tokens")} == mine, (host, name, files)
      assert "splits.npz" in files
    # It trained on users of its own shards only.
    users = np.array(result[host]["users"])
    assert (shards.shard_of(users[users > 0], NUM_SHARDS) % 2 == host).all()
  assert not set(result[0]["users"]) & set(result[1]["users"]) - {0}

  # (b) Different batches, one model: the gradients were all-reduced across the processes.
  assert result[0]["losses"] == result[1]["losses"]
  assert np.isfinite(result[0]["losses"]).all()
  assert result[0]["params"] == result[1]["params"]
  assert result[0]["valid"] == result[1]["valid"]

  # (c) Process 0's token index is the size of its own data: the same with or without the 8 more
  # users of process 1's shards, which process 1's grew by.
  for kind in ("pairs", "ranking"):
    s0, s1 = result[0]["index_sizes"], result[1]["index_sizes"]
    assert s0[f"a_dir/{kind}"] == s0[f"b_dir/{kind}"] == int(
        a.splits.train_end[a.host_part(0, 2).records].sum())
    assert s1[f"b_dir/{kind}"] == s1[f"a_dir/{kind}"] + EXTRA_USERS * (EVENTS_PER_USER - 2)


# ----------------------------------------------------------------------------- data.runner


def _data_config(tmp_path, **changes):
  config = sequential_config()
  overrides = [f"data.{k}={v}" for k, v in {"dataset": "csv", "columns": COLUMNS,
                                             "shards": 2, **changes}.items()]
  return apply_overrides(config, overrides).data  # as --config.data.runner=direct sets it


def test_a_beam_runner_in_the_config_prepares_a_missing_data_dir(tmp_path):
  pytest.importorskip("apache_beam")
  log = _write_log(tmp_path / "log.csv", extra=False)
  beam = open_or_prepare(_data_config(
      tmp_path, path=log, dir=tmp_path / "beam", runner="direct",
      beam_options="direct_num_workers=1"))
  assert beam.manifest["options"]["shards"] == 2
  local = open_or_prepare(_data_config(tmp_path, path=log, dir=tmp_path / "local"))
  for name in ("user", "item"):
    assert beam.vocabs[name] == local.vocabs[name]
  for field in ("train_end", "valid_end", "length"):
    np.testing.assert_array_equal(getattr(beam.splits, field), getattr(local.splits, field))
  users = np.arange(beam.num_users) + 2
  for x, y in zip(beam.user_tokens(users), local.user_tokens(users), strict=True):
    np.testing.assert_array_equal(x, y)
  assert [s["file"] for s in beam.manifest["shards"]] == [
      s["file"] for s in local.manifest["shards"]]
  # Once there, the directory is read whatever the runner says.
  again = open_or_prepare(_data_config(tmp_path, path=log, dir=tmp_path / "beam", runner="spark"))
  assert again.path == beam.path


def test_data_runner_mistakes_are_named(tmp_path):
  log = _write_log(tmp_path / "log.csv", extra=False)
  with pytest.raises(UserError, match="unknown runner 'sparc'"):
    open_or_prepare(_data_config(tmp_path, path=log, dir=tmp_path / "x", runner="sparc"))
  with pytest.raises(UserError, match="data.beam_options=.*data.runner is 'local'.*runner=direct"):
    open_or_prepare(_data_config(tmp_path, path=log, dir=tmp_path / "x",
                                 beam_options="direct_num_workers=2"))
  assert not (tmp_path / "x").exists()


def test_resuming_a_run_from_before_data_runner_is_not_a_config_change(tmp_path):
  from jaxrec.config import config_json
  from jaxrec.train.checkpoint import CONFIG, resume_changes
  config = sequential_config()
  old = json.loads(config_json(config))
  del old["data"]["runner"], old["data"]["beam_options"]
  (tmp_path / CONFIG).write_text(json.dumps(old))
  assert resume_changes(str(tmp_path), 10, config) == {}
  changed = apply_overrides(sequential_config(), ["data.runner=direct"])
  assert resume_changes(str(tmp_path), 10, changed) == {}
