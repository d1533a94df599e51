"""Micro-batching: concurrent requests share one pass through the jitted models.

Requests wait in a bounded queue; one worker takes the first, then whatever else arrives within
`max_wait_ms` (up to `max_batch`), and answers them together on a single model thread (in the
service, it hands the batch to the model process: serving/model_process.py); a batch that fails is answered again one request at a time,
so a request that breaks the pipeline fails alone. A request is refused at once (`Overloaded`, a
503) when the queue is full or its expected wait (queue length x the measured time per request)
is over half of `max_queue_seconds`, and one that waited longer than `max_queue_seconds` anyway is
refused rather than answered late: an overloaded service answers fast instead of working through
a backlog its clients gave up on. The margin between the two keeps the late refusals rare when
the estimate is off (a busy machine); the app checks `refusal()` before parsing a request, so a
refusal costs next to nothing.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import time
from typing import Callable


class Overloaded(Exception):
  pass


class Batcher:
  def __init__(self, run: Callable[[list], list], max_batch: int, max_wait_ms: float,
               max_queue: int, max_queue_seconds: float = 1.0):
    self.run = run  # run(items) -> results, one per item, on the model thread
    self.max_batch = max_batch
    self.max_wait = max_wait_ms / 1000
    self.max_queue_seconds = max_queue_seconds
    self.queue: asyncio.Queue = asyncio.Queue(maxsize=max_queue)
    self.executor = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="model")
    self.worker: asyncio.Task | None = None
    self.seconds_per_request = 0.0  # moving average of the model thread's time per request

  def start(self) -> None:
    self.worker = asyncio.get_running_loop().create_task(self._work())

  async def stop(self) -> None:
    if self.worker:
      self.worker.cancel()
    self.executor.shutdown(wait=False, cancel_futures=True)

  def refusal(self) -> str | None:
    """Why a request arriving now would be refused (None: admitted). Admission by the queue's
    expected wait: a request that would wait past half of max_queue_seconds is refused now, a
    fast 503, rather than after its client has given up."""
    if self.queue.full():
      return f"{self.queue.maxsize} requests are already waiting"
    expected = (self.queue.qsize() + 1) * self.seconds_per_request
    if expected > self.max_queue_seconds / 2:
      return f"the queue's expected wait is {expected:.2f} s"
    return None

  async def submit(self, item):
    reason = self.refusal()
    if reason:
      raise Overloaded(reason)
    future = asyncio.get_running_loop().create_future()
    try:
      self.queue.put_nowait((item, future, time.perf_counter()))
    except asyncio.QueueFull:
      raise Overloaded(f"{self.queue.maxsize} requests are already waiting") from None
    return await future

  def _run_isolated(self, items: list) -> list:
    """run(items), or when the batch fails, each item alone: one bad request fails only itself
    (and the worker never dies)."""
    try:
      return self.run(items)
    except Exception as e:
      if len(items) == 1:
        return [e]
    results = []
    for item in items:
      try:
        results.extend(self.run([item]))
      except Exception as e:
        results.append(e)
    return results

  async def _work(self) -> None:
    loop = asyncio.get_running_loop()
    while True:
      batch = [await self.queue.get()]
      deadline = time.perf_counter() + self.max_wait
      while len(batch) < self.max_batch:
        remaining = deadline - time.perf_counter()
        if remaining <= 0 and self.queue.empty():
          break
        try:
          batch.append(self.queue.get_nowait() if remaining <= 0 else
                       await asyncio.wait_for(self.queue.get(), remaining))
        except (asyncio.QueueEmpty, asyncio.TimeoutError):
          break
      stale = time.perf_counter() - self.max_queue_seconds
      for _, future, queued in batch:
        if queued < stale and not future.done():
          future.set_exception(Overloaded(f"waited over {self.max_queue_seconds:g} s in the queue"))
      batch = [entry for entry in batch if not entry[1].done()]
      if not batch:
        continue
      items = [item for item, _, _ in batch]
      started = time.perf_counter()
      results = await loop.run_in_executor(self.executor, self._run_isolated, items)
      per_request = (time.perf_counter() - started) / len(items)
      self.seconds_per_request = 0.8 * self.seconds_per_request + 0.2 * per_request
      for (_, future, _), result in zip(batch, results):
        if future.done():
          continue
        if isinstance(result, Exception):
          future.set_exception(result)
        else:
          future.set_result(result)
