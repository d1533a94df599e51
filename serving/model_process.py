"""Each bundle version's model in a process of its own, so loading a new version cannot slow live
requests (serving/app.py: the service talks to the current one through a `ModelProcess`).

Why a process: loading and warming a version in the serving process (restoring, building the
index, tracing every batch size) holds Python's GIL in trains of short holds that live requests
wait behind; on 2 cores a reload gave p99 93-208 ms against a steady 9-11 ms, whatever its thread's
priority, and pinning that thread to a core of its own did not help (191 ms). A separate process
pinned to cores of its own while the live one keeps the others: p99 11.4 ms through the load.

So while a version loads, the live model process and the service keep most CPUs and the loading
process gets the rest (`split_cpus`), niced (LOADING_NICE) so whatever else runs there goes
first; after the swap every process may use every CPU again at the service's priority.

The exploration counts stay in the service, which takes feedback: with a Redis store the model
process opens its own client to it; kept in the process, the service's counts are copied to the
model process when it starts and every update follows (`ReplicatedPosteriors`) with the next
message, so its Thompson draws read the same counts.
"""

from __future__ import annotations

import contextlib
import gc
import multiprocessing
import os
import threading

import numpy as np

from jaxrec.data.vocab import FIRST_ID, OOV
from jaxrec.errors import UserError


def split_cpus(cpus: set[int]) -> tuple[set[int], set[int]] | None:
  """(for live traffic, for loading) out of `cpus`: a quarter (at least one) loads; None with a
  single CPU (nothing to split)."""
  cpus = sorted(cpus)
  if len(cpus) < 2:
    return None
  loading = max(1, len(cpus) // 4)
  return set(cpus[:-loading]), set(cpus[-loading:])


LOADING_NICE = 10  # a loading process's nice value above the service's


def may_restore_priority() -> bool:
  """Whether this process may lower a nice value back (root, or RLIMIT_NICE allows it): a loading
  process is niced only when it can be given the service's priority once it serves."""
  try:
    import resource
    return os.geteuid() == 0 or \
        resource.getrlimit(resource.RLIMIT_NICE)[0] >= 20 - os.getpriority(os.PRIO_PROCESS, 0)
  except (ImportError, AttributeError, OSError):
    return False


def place(pid: int, cpus: set[int] | None = None, nice: int | None = None) -> None:
  """Every thread of process `pid` to `cpus` and/or nice value `nice` (both belong to each thread
  on Linux, and threads started later inherit their creator's); elsewhere nothing changes."""
  with contextlib.suppress(OSError, AttributeError):
    for tid in os.listdir(f"/proc/{pid}/task"):
      with contextlib.suppress(OSError):  # a thread that ended meanwhile
        if cpus:
          os.sched_setaffinity(int(tid), cpus)
        if nice is not None:
          os.setpriority(os.PRIO_PROCESS, int(tid), nice)


class ReplicatedPosteriors:
  """The service's in-process Beta counts (feedback updates them here), each update also queued
  for every model process subscribed, which keeps a copy to draw from."""

  def __init__(self, posteriors):
    self.posteriors = posteriors
    self._lock = threading.Lock()
    self._queues: list[list] = []

  def update(self, items, impressions, engagements) -> None:
    with self._lock:
      self.posteriors.update(items, impressions, engagements)  # checked here: a bad row raises
      for queue in self._queues:
        queue.append((np.asarray(items), np.asarray(impressions), np.asarray(engagements)))

  def for_catalogue(self, item_keys) -> ReplicatedPosteriors:
    self.posteriors.grow(len(item_keys))
    return self

  def subscribe(self) -> tuple[dict, list]:
    """(the counts now, the queue every later update is appended to), atomically."""
    with self._lock:
      queue = []
      self._queues.append(queue)
      return self.posteriors.state_dict(), queue

  def unsubscribe(self, queue: list) -> None:
    with self._lock:
      self._queues = [q for q in self._queues if q is not queue]

  def take(self, queue: list) -> list:
    with self._lock:
      taken = queue[:]
      queue.clear()
      return taken

  def __getattr__(self, name):  # impressions, engagements, sample, grow, state_dict
    return getattr(self.posteriors, name)


class Closed(Exception):
  """The version was swapped out between taking a message and sending it: ask the new one."""


class ModelProcess:
  """The service's handle on one version's model process: `recommend`, `similar`, and the
  catalogue lookups a request needs before it is batched (`item_ids`, `unknown_genres`) answered
  here from a copy of the catalogue. Thread-safe: one message at a time."""

  def __init__(self, path: str, config, posteriors, *, state_url: str | None = None,
               max_batch: int = 64, cpus: set[int] | None = None, nice: int = 0):
    """Starts the process and returns once the version is loaded and every batch size compiled;
    the loader's error (a UserError naming the fix, or the failure) is raised otherwise.
    posteriors: the service's ReplicatedPosteriors, or its shared store with `state_url`;
    cpus, nice: where and how much above this process's nice value it loads."""
    import jax
    context = multiprocessing.get_context("spawn")  # a fresh interpreter: no forked XLA threads
    self._connection, child = context.Pipe()
    self._process = context.Process(
        target=_main, name=f"jaxrec-model-{os.path.basename(path)}", daemon=True,
        args=(child, path, config, state_url, max_batch, cpus, nice,
              jax.config.jax_compilation_cache_dir))
    self._process.start()
    child.close()
    self._lock = threading.Lock()
    self._queue = None
    self._closed = False
    try:
      try:
        self.version, item_raw, genres = self._receive()
      except EOFError as e:
        self._process.join(5)
        raise UserError(f"the model process exited while loading {path} (exit code "
                        f"{self._process.exitcode}); see the log above.") from e
      self.path = path
      self.pid = self._process.pid
      self.item_raw = item_raw
      self._item_index = {raw: i for i, raw in enumerate(item_raw) if i >= FIRST_ID}
      self._genres = set(genres)
      self.posteriors = posteriors.for_catalogue(item_raw)
      if state_url is None:  # the counts so far, then every update with the next message
        state, self._queue = posteriors.subscribe()
        self._call("counts", state)
    except BaseException:
      self.close()
      raise

  @property
  def alive(self) -> bool:
    return self._process.is_alive()

  def recommend(self, requests: list) -> list[dict]:
    return self._call("recommend", requests)

  def similar(self, item_id: str, k: int) -> list[dict]:
    return self._call("similar", item_id, k)

  def item_ids(self, raw) -> np.ndarray:
    """Raw item ids (strings) -> this version's ids, OOV for unknown ones."""
    return np.array([self._item_index.get(str(x), OOV) for x in raw], np.int64)

  def unknown_genres(self, names: list[str]) -> list[str]:
    return [name for name in names if name not in self._genres]

  def close(self) -> None:
    """Stops the process once the message in flight, if any, is answered; later calls raise
    `Closed`."""
    with self._lock:
      self._closed = True
      if self._queue is not None:
        self.posteriors.unsubscribe(self._queue)
        self._queue = None
      with contextlib.suppress(OSError):
        self._connection.close()
    self._process.join(5)
    if self._process.is_alive():
      self._process.kill()
      self._process.join(5)

  def _call(self, kind: str, *args):
    with self._lock:
      if self._closed:
        raise Closed(f"bundle version {self.version} was replaced")
      updates = self.posteriors.take(self._queue) if self._queue is not None else []
      try:
        self._connection.send((kind, updates, args))
        return self._receive()
      except (EOFError, OSError) as e:
        raise RuntimeError(f"the model process of bundle version {self.version} is gone "
                           f"(exit code {self._process.exitcode}); the service reloads it") from e

  def _receive(self):
    ok, value = self._connection.recv()
    if not ok:
      raise value
    return value


def _main(connection, path, config, state_url, max_batch, cpus, nice,
          compilation_cache_dir) -> None:
  """The model process: load and warm up, report, then answer messages until the service closes
  the connection."""
  place(os.getpid(), cpus)  # before JAX starts its threads: they inherit both
  if nice:
    os.nice(nice)
  try:
    from jaxrec.serve import compilation_cache
    from jaxrec.serve.recommender import Recommender
    from jaxrec.rerank.posteriors import BetaPosteriors
    if compilation_cache_dir:
      compilation_cache.enable(compilation_cache_dir)
    if state_url:
      from jaxrec.serve.posterior_store import RedisPosteriors, connect
      posteriors = RedisPosteriors(connect(state_url))
    else:
      posteriors = BetaPosteriors(0)
    recommender = Recommender(path, config, posteriors)
    recommender.warm_up(max_batch=max_batch)
    # The loaded models and tables live as long as the process: out of the garbage collector's
    # generations, so its full collections (latency spikes of tens of ms) stay short.
    gc.collect()
    gc.freeze()
    genres = [] if recommender.genre_ids is None else \
        [str(g) for g in recommender.genre_ids.raw_ids]
    connection.send((True, (recommender.version, list(recommender.item_raw), genres)))
  except BaseException as e:  # noqa: BLE001 - reported to the service, which refuses the bundle
    connection.send((False, _picklable(e)))
    return
  while True:
    try:
      kind, updates, args = connection.recv()
    except (EOFError, OSError):  # the service closed it, or is gone
      return
    try:
      for update in updates:
        recommender.posteriors.update(*update)
      if kind == "counts":
        recommender.posteriors = BetaPosteriors.from_state_dict(args[0])
        answer = None
      elif kind == "recommend":
        answer = recommender.recommend(*args)
      else:
        answer = recommender.similar(*args)
      connection.send((True, answer))
    except Exception as e:  # only this message fails
      connection.send((False, _picklable(e)))


def _picklable(e: BaseException) -> BaseException:
  import pickle
  try:
    pickle.loads(pickle.dumps(e))
    return e
  except Exception:  # noqa: BLE001
    return RuntimeError(f"{type(e).__name__}: {e}")
