"""Open-loop, fixed-rate load generator for the recommendation service (`POST /v1/recommend`).

Requests are issued at intended times t0 + i/rate (or Poisson arrivals) whatever the responses
do, and each latency is measured from the intended send time. A stalled server (or client) thus
shows up as latency for every request scheduled during the stall, instead of quietly lowering the
send rate: no coordinated omission (the wrk2 / HdrHistogram argument).

HTTP/1.1 is spoken over raw asyncio streams: on the 2-core dev box httpx.AsyncClient cost ~2.5 ms
of CPU per request (half a core at 200 rps, behind schedule at 500 rps); these streams cost ~0.3 ms.

  python -m serving.loadtest --url http://127.0.0.1:8000/v1/recommend --rate 100 --duration 60 \
    --warmup 5 --users-file users.txt --json out.json
"""
from __future__ import annotations

import argparse
import asyncio
import dataclasses
import itertools
import json
import math
import random
import re
import resource
import ssl
import sys
import time
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

# p99 send lateness above this: this machine delayed the sends (a busy CPU). Latency runs from the
# intended time, so it includes the delay and overstates the server's.
BEHIND_MS = 10.0
_clock = time.perf_counter  # not loop.time(): that has 1 ms resolution under uvloop


class _ConnectError(Exception):
  """No connection could be opened (refused, unreachable, bad host)."""


class _Pool:
  """HTTP/1.1 keep-alive connections to the host of `url`; `post` returns the status code."""

  def __init__(self, url: str, max_connections: int):
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
      raise ValueError(f"url must look like http://host:port/v1/recommend, got {url!r}")
    self.host = parts.hostname
    self.port = parts.port or (443 if parts.scheme == "https" else 80)
    self.ssl = ssl.create_default_context() if parts.scheme == "https" else None
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    self.head = (f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nUser-Agent: jaxrec-loadtest\r\n"
                 "Content-Type: application/json\r\nContent-Length: ").encode()
    self.idle = []  # LIFO, so a steady load keeps reusing the few hottest connections
    self.slots = asyncio.Semaphore(max_connections)

  async def post(self, body: bytes) -> int:
    msg = self.head + b"%d\r\n\r\n" % len(body) + body
    async with self.slots:
      while True:
        conn = self.idle.pop() if self.idle else None
        reused = conn is not None
        if not reused:
          try:
            conn = await asyncio.open_connection(self.host, self.port, ssl=self.ssl)
          except OSError as e:  # TimeoutError is an OSError but goes through asyncio.timeout
            if isinstance(e, TimeoutError):
              raise
            raise _ConnectError(str(e)) from e
        reader, writer = conn
        try:
          writer.write(msg)
          await writer.drain()
          head = await reader.readuntil(b"\r\n\r\n")
        except (ConnectionError, asyncio.IncompleteReadError) as e:
          writer.close()
          # The server may close an idle keep-alive connection just as it is reused; like
          # urllib3, retry on a fresh one when no byte of the response arrived.
          if reused and not getattr(e, "partial", b""):
            continue
          raise
        except BaseException:
          writer.close()
          raise
        try:
          status, keep = await _read_rest(reader, head)
        except BaseException:
          writer.close()
          raise
        if keep:
          self.idle.append(conn)
        else:
          writer.close()
        return status

  def close(self):
    while self.idle:
      self.idle.pop()[1].close()


async def _read_rest(reader: asyncio.StreamReader, head: bytes) -> tuple[int, bool]:
  """Reads the body after the status line and headers `head`; returns (status, keep-alive)."""
  lines = head.split(b"\r\n")
  version, status = lines[0].split(b" ", 2)[:2]
  status = int(status)
  headers = {}
  for line in lines[1:]:
    name, _, value = line.partition(b":")
    headers[name.strip().lower()] = value.strip().lower()
  keep = version == b"HTTP/1.1" and headers.get(b"connection") != b"close"
  if b"chunked" in headers.get(b"transfer-encoding", b""):
    while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
      await reader.readexactly(size + 2)
    while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
      pass
  elif b"content-length" in headers:
    await reader.readexactly(int(headers[b"content-length"]))
  elif status >= 200 and status not in (204, 304):
    await reader.read()  # no length: the body ends when the server closes
    keep = False
  return status, keep


def _error_kind(e: Exception) -> str:
  if isinstance(e, TimeoutError):
    return "timeout"
  if isinstance(e, _ConnectError):
    return "connect"
  if isinstance(e, (ConnectionError, EOFError)):
    return "disconnect"
  if isinstance(e, (ValueError, asyncio.LimitOverrunError)):
    return "protocol"
  return f"error:{type(e).__name__}"


def _body_source(payloads) -> Callable[[], bytes]:
  """Each request's body from a callable, a Mapping (fixed), a list (cycled) or an iterator."""
  if callable(payloads):
    get = payloads
  elif isinstance(payloads, (Mapping, str, bytes)):
    get = itertools.repeat(payloads).__next__
  elif isinstance(payloads, (list, tuple)):
    if not payloads:
      raise ValueError("payloads is an empty list")
    get = itertools.cycle(payloads).__next__
  else:
    it = iter(payloads)

    def get():
      try:
        return next(it)
      except StopIteration:
        raise ValueError("payloads ran out; pass a callable, a list (cycled) or an endless "
                         "iterator") from None

  def body() -> bytes:
    value = get()
    if isinstance(value, bytes):
      return value
    if isinstance(value, str):
      return value.encode()
    return json.dumps(value, separators=(",", ":")).encode()

  return body


def _summary(seconds: list[float], with_p95=True) -> dict[str, float | None]:
  """Nearest-rank percentiles and max, in ms."""
  keys = ("p50", "p95", "p99") if with_p95 else ("p50", "p99")
  if not seconds:
    return {k: None for k in (*keys, "max", "mean")}
  v = sorted(seconds)
  out = {k: v[max(0, math.ceil(int(k[1:]) / 100 * len(v)) - 1)] for k in keys}
  out.update(max=v[-1], mean=sum(v) / len(v))
  return {k: round(x * 1e3, 3) for k, x in out.items()}


def _raise_fd_limit(needed: int):
  soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
  if soft != resource.RLIM_INFINITY and soft < needed:
    resource.setrlimit(resource.RLIMIT_NOFILE,
                       (needed if hard == resource.RLIM_INFINITY else min(needed, hard), hard))


@dataclasses.dataclass
class LoadResult:
  """Statistics over the requests whose intended send time lies in the measured window."""
  url: str
  rate: float  # requested
  duration: float  # the measured window, after `warmup`
  warmup: float
  poisson: bool
  count: int  # requests issued
  ok: int  # HTTP 200
  completed: int  # got an HTTP response, any status
  send_rate: float  # count / the time it took to issue them (>= duration)
  completion_rate: float  # completed / the time until the last of them completed (>= duration)
  errors: dict[str, int]  # "http_<status>", "timeout", "connect", "disconnect", "protocol"
  latency_ms: dict[str, float | None]  # intended send -> response, over the 200s
  latency_all_ms: dict[str, float | None]  # the same over all requests, errors when they failed
  lateness_ms: dict[str, float | None]  # actual issue time - intended time
  fell_behind: bool  # lateness p99 > BEHIND_MS: the generator did not keep the schedule
  max_in_flight: int
  max_connections: int
  conn_limited: bool  # requests waited for a free connection (the wait counts as latency)
  cpu_percent: float  # of this process over the run, an in-process server included
  # Per error kind: latency summary, and how many were answered within `fast_ms` of their
  # intended send (an overloaded service should refuse fast, not let clients time out).
  error_latency_ms: dict[str, dict] = dataclasses.field(default_factory=dict)
  fast_errors: dict[str, int] = dataclasses.field(default_factory=dict)
  fast_ms: float = 50.0

  @property
  def error_count(self) -> int:
    return sum(self.errors.values())

  def to_dict(self) -> dict[str, Any]:
    """All fields, plus flat headline numbers for tables (latencies over all requests)."""
    lat = self.latency_all_ms
    return {**dataclasses.asdict(self), "achieved_rate": self.completion_rate,
            "error_count": self.error_count, "p50_ms": lat["p50"], "p95_ms": lat["p95"],
            "p99_ms": lat["p99"], "max_ms": lat["max"]}


async def run_load(url: str, rate: float, duration: float, payloads, *, warmup: float = 0.0,
                   timeout: float = 2.0, poisson: bool = False, seed: int = 0,
                   max_connections: int | None = None, fast_ms: float = 50.0,
                   on_record: Callable | None = None) -> LoadResult:
  """Sends `rate` requests/s for `warmup` + `duration` seconds and measures the last `duration`.

  on_record(intended, done, error kind or None), per request as it ends (times from
  time.perf_counter): for statistics over a part of the run.

  `timeout` bounds each request from its issue (waiting for a connection included). Requests
  beyond `max_connections` (default rate/2 + 64, enough for 500 ms latencies) wait for a free one.
  """
  if rate <= 0 or duration <= 0 or warmup < 0 or timeout <= 0:
    raise ValueError(f"need rate, duration, timeout > 0 and warmup >= 0; got rate={rate}, "
                     f"duration={duration}, timeout={timeout}, warmup={warmup}")
  max_connections = max_connections or int(rate // 2) + 64
  _raise_fd_limit(max_connections + 256)
  pool = _Pool(url, max_connections)
  next_body = _body_source(payloads)
  rng = random.Random(seed)
  records = []  # (intended, issued, done, error kind or None, got a response)
  tasks = set()
  in_flight = max_in_flight = 0

  async def one(intended: float, issued: float, body: bytes):
    nonlocal in_flight, max_in_flight
    in_flight += 1
    max_in_flight = max(max_in_flight, in_flight)
    status = None
    try:
      async with asyncio.timeout(timeout):
        status = await pool.post(body)
      kind = None if status == 200 else f"http_{status}"
    except Exception as e:
      kind = _error_kind(e)
    in_flight -= 1
    records.append((intended, issued, _clock(), kind, status is not None))
    if on_record is not None:
      on_record(intended, records[-1][2], kind)

  cpu0 = time.process_time()
  start = _clock() + 0.005  # time to build the first body
  offset, i = 0.0, 0
  try:
    while offset < warmup + duration:
      body = next_body()  # before sleeping, so that its cost does not make the send late
      intended = start + offset
      delay = intended - _clock()
      await asyncio.sleep(delay if delay > 0 else 0)  # behind schedule: yield, then catch up
      task = asyncio.create_task(one(intended, _clock(), body))
      tasks.add(task)
      task.add_done_callback(tasks.discard)
      i += 1
      offset = offset + rng.expovariate(rate) if poisson else i / rate
    await asyncio.gather(*tasks)
  finally:
    for task in tasks:
      task.cancel()
    pool.close()
  cpu = time.process_time() - cpu0
  wall = _clock() - start

  window = start + warmup
  rec = [r for r in records if r[0] >= window - 1e-9]
  done = [r for r in rec if r[4]]
  errors = Counter(r[3] for r in rec if r[3] is not None)
  lateness = _summary([r[1] - r[0] for r in rec], with_p95=False)
  return LoadResult(
      url=url, rate=rate, duration=duration, warmup=warmup, poisson=poisson, count=len(rec),
      ok=sum(r[3] is None for r in rec), completed=len(done),
      send_rate=len(rec) / max([duration] + [r[1] - window for r in rec]),
      completion_rate=len(done) / max([duration] + [r[2] - window for r in done]),
      errors=dict(sorted(errors.items())),
      latency_ms=_summary([r[2] - r[0] for r in rec if r[3] is None]),
      latency_all_ms=_summary([r[2] - r[0] for r in rec]),
      lateness_ms=lateness, fell_behind=bool(rec) and lateness["p99"] > BEHIND_MS,
      max_in_flight=max_in_flight, max_connections=max_connections,
      conn_limited=max_in_flight > max_connections,
      cpu_percent=round(100 * cpu / wall, 1),
      error_latency_ms={kind: _summary([r[2] - r[0] for r in rec if r[3] == kind])
                        for kind in sorted(errors)},
      fast_errors={kind: sum(r[3] == kind and r[2] - r[0] <= fast_ms / 1000 for r in rec)
                   for kind in sorted(errors)},
      fast_ms=fast_ms)


def run(url: str, rate: float, duration: float, payloads, **kwargs) -> LoadResult:
  """`run_load` for callers without an event loop."""
  return asyncio.run(run_load(url, rate, duration, payloads, **kwargs))


@dataclasses.dataclass
class MaxRate:
  """Unpacks as `rate, result = find_max_rate(...)`."""
  rate: float | None  # the highest passing rate; None when even `start` failed
  result: LoadResult | None  # its run
  trials: list[dict[str, Any]]  # every rate tried, in order, with why it failed

  def __iter__(self):
    return iter((self.rate, self.result))

  def to_dict(self) -> dict[str, Any]:
    return {"rate": self.rate, "result": self.result and self.result.to_dict(),
            "trials": self.trials}


def _failure(result: LoadResult, p99_ms: float, max_error_rate: float) -> str | None:
  # Late sends need no test of their own: latency runs from the intended time, so a generator
  # that cannot keep up fails on p99 (the reason then says so).
  if result.error_count > max_error_rate * result.count:
    return f"errors {result.errors}"
  if result.latency_all_ms["p99"] > p99_ms:
    late = (f" (the generator was late: lateness p99 {result.lateness_ms['p99']} ms)"
            if result.fell_behind else "")
    return f"p99 {result.latency_all_ms['p99']} ms > {p99_ms} ms{late}"
  return None


async def find_max_rate_async(url: str, payloads, *, p99_ms: float, start: float,
                              duration: float, factor: float = 1.25, refine: int = 0,
                              max_rate: float | None = None, max_error_rate: float = 0.0,
                              **run_kwargs) -> MaxRate:
  """Multiplies the rate by `factor` from `start` until p99 > `p99_ms` or errors appear.

  `refine` bisection steps then narrow the gap between the last passing and the first failing
  rate. Other keyword arguments (warmup, timeout, poisson, seed, ...) go to `run_load`.
  """
  if factor <= 1:
    raise ValueError(f"factor must be > 1, got {factor}")
  trials, best = [], None

  async def trial(rate: float) -> bool:
    nonlocal best
    result = await run_load(url, rate, duration, payloads, **run_kwargs)
    reason = _failure(result, p99_ms, max_error_rate)
    trials.append({"rate": round(rate, 3), "passed": reason is None, "reason": reason,
                   "p99_ms": result.latency_all_ms["p99"], "errors": result.errors})
    if reason is None and (best is None or rate > best[0]):
      best = (rate, result)
    return reason is None

  rate, failed = start, None
  while max_rate is None or rate <= max_rate:
    if not await trial(rate):
      failed = rate
      break
    rate *= factor
  if best is not None and failed is not None:
    lo, hi = best[0], failed
    for _ in range(refine):
      mid = (lo + hi) / 2
      lo, hi = (mid, hi) if await trial(mid) else (lo, mid)
  return MaxRate(best and best[0], best and best[1], trials)


def find_max_rate(url: str, payloads, **kwargs) -> MaxRate:
  """`find_max_rate_async` for callers without an event loop."""
  return asyncio.run(find_max_rate_async(url, payloads, **kwargs))


def read_user_ids(path: str) -> list[str]:
  """One id per line, or the first column of a tab/comma/'::'-separated file; deduplicated."""
  ids = {}
  with open(path) as f:
    for line in f:
      line = line.strip()
      if line and not line.startswith("#"):
        ids[re.split(r"::|[\t,; ]", line, maxsplit=1)[0]] = None
  return list(ids)


def user_payloads(user_ids: list[str], template: Mapping | None = None, k: int = 20,
                  seed: int = 0) -> Callable[[], dict]:
  """Bodies like {"user_id": <random id>, "k": k}; `template` replaces the default fields."""
  base = dict(template) if template is not None else {"k": k}
  if not user_ids:
    return lambda: base
  rng = random.Random(seed)
  return lambda: {**base, "user_id": rng.choice(user_ids)}


def format_result(r: LoadResult) -> str:
  arrivals = "Poisson" if r.poisson else "fixed"
  late = r.lateness_ms
  rows = [
      f"target    {r.rate:g} rps for {r.duration:g} s (+{r.warmup:g} s warmup), {arrivals} "
      f"arrivals, {r.cpu_percent:g}% CPU",
      f"sent      {r.count:>7}  {r.send_rate:8.1f} rps   lateness p50 {late['p50']} ms, "
      f"p99 {late['p99']} ms, max {late['max']} ms",
      f"completed {r.completed:>7}  {r.completion_rate:8.1f} rps   ok {r.ok}",
      "errors    " + (" ".join(f"{k}={v}" for k, v in r.errors.items()) or "none"),
      f"{'latency ms':<12}" + "".join(f"{k:>10}" for k in ("p50", "p95", "p99", "max")),
  ]
  for name, lat in (("ok", r.latency_ms), ("all", r.latency_all_ms)):
    rows.append(f"  {name:<10}" + "".join(
        f"{'-' if lat[k] is None else f'{lat[k]:.1f}':>10}" for k in ("p50", "p95", "p99", "max")))
  if r.fell_behind:
    rows.append(f"WARNING: sends were late (p99 {late['p99']} ms > {BEHIND_MS} ms): this machine's "
                "CPU is busy; latencies include the delay, so they overstate the server's")
  if r.conn_limited:
    rows.append(f"note: more than {r.max_connections} requests were in flight, the rest waited "
                "for a connection (counted as latency); raise --max-connections")
  return "\n".join(rows)


def _parse(argv):
  p = argparse.ArgumentParser(prog="python -m serving.loadtest", description=__doc__.split("\n")[0])
  p.add_argument("--url", default="http://127.0.0.1:8000/v1/recommend")
  p.add_argument("--rate", type=float, default=100.0,
                 help="requests/s (the start rate with --find-max)")
  p.add_argument("--duration", type=float, default=60.0, help="measured seconds")
  p.add_argument("--warmup", type=float, default=0.0, help="seconds sent first, not measured")
  p.add_argument("--timeout", type=float, default=2.0, help="seconds per request")
  p.add_argument("--poisson", action="store_true", help="Poisson arrivals instead of fixed gaps")
  p.add_argument("--seed", type=int, default=0)
  p.add_argument("--max-connections", type=int, default=None)
  p.add_argument("--users-file", help="user ids, one per line (or the first column)")
  p.add_argument("--user-ids", help="comma-separated user ids")
  p.add_argument("--k", type=int, default=20)
  p.add_argument("--body", help="JSON body template; user_id is replaced when ids are given")
  p.add_argument("--find-max", type=float, metavar="P99_MS",
                 help="step the rate up by --factor from --rate until p99 > P99_MS or errors")
  p.add_argument("--factor", type=float, default=1.25)
  p.add_argument("--json", metavar="OUT", help="write the results here")
  return p.parse_args(argv)


def main(argv=None) -> int:
  args = _parse(argv)
  try:
    ids = []
    if args.users_file:
      ids = read_user_ids(args.users_file)
    if args.user_ids:
      ids += [u for u in args.user_ids.split(",") if u]
    template = json.loads(args.body) if args.body else None
    if template is not None and not isinstance(template, dict):
      raise ValueError(f"--body must be a JSON object, got {args.body!r}")
    if not ids and template is None:
      raise ValueError("nothing to send: pass --users-file, --user-ids or --body")
    payloads = user_payloads(ids, template, args.k, args.seed)
    kw = dict(warmup=args.warmup, timeout=args.timeout, poisson=args.poisson, seed=args.seed,
              max_connections=args.max_connections)
    if args.find_max is None:
      result = run(args.url, args.rate, args.duration, payloads, **kw)
      out = result.to_dict()
      print(format_result(result))
    else:
      found = find_max_rate(args.url, payloads, p99_ms=args.find_max, start=args.rate,
                            duration=args.duration, factor=args.factor, **kw)
      out = found.to_dict()
      for t in found.trials:
        print(f"{t['rate']:>10.1f} rps  {'pass' if t['passed'] else 'FAIL'}  p99 {t['p99_ms']} ms"
              + (f"  ({t['reason']})" if t["reason"] else ""))
      print(f"max rate with p99 <= {args.find_max:g} ms: {found.rate and round(found.rate, 1)}")
      if found.result:
        print(format_result(found.result))
  except (ValueError, OSError) as e:  # json.JSONDecodeError is a ValueError
    print(f"error: {e}", file=sys.stderr)
    return 2
  if args.json:
    with open(args.json, "w") as f:
      json.dump(out, f, indent=2)
  return 0


if __name__ == "__main__":
  sys.exit(main())
