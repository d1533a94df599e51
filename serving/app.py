"""The HTTP service (`jaxrec serve --export DIR`): FastAPI under uvicorn.

    POST /v1/recommend   user and/or recent history, context, k, exclusions -> top-k with per-head
                         and combined scores, the stage that placed each item, per-stage timings
    POST /v1/similar     item-to-item by embedding
    POST /v1/feedback    per shown item, an impression and an engagement -> the exploration
                         posteriors (serving/feedback_guard.py: the API key, a per-client rate,
                         and only items an answer of this service showed, each counted once)
    GET  /healthz, /readyz, /metrics (Prometheus), /docs (OpenAPI)
Every answer carries a `request_id`; with a decision log (`--decision-log DIR`,
jaxrec/eval/offpolicy/decision_log.py) it is logged with its propensities, and so is the feedback
quoting it. Server limits (body size, read timeouts, connections) are in serving/limits.py.

The exploration state (posterior counts, and the answers feedback may quote) lives in the
process by default; `--state redis://HOST:PORT/DB` keeps it in Redis, shared by every replica
naming the same store and kept across restarts (jaxrec/serve/posterior_store.py,
feedback_guard.SharedIssuedRequests).

The newest complete bundle under the export directory serves, its models in a process of their
own (serving/model_process.py). A watcher loads a newer version when one appears in a new model
process, on CPUs live traffic does not use, warms it up (every batch size compiled) and swaps it
in atomically: requests already batched finish on the old one, which then stops. A bundle that
fails to load (incomplete, modified, incompatible) is refused and logged, and the old one keeps
serving; a model process that dies is started again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import time
import uuid

from fastapi import FastAPI, Request as HttpRequest
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client import generate_latest
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints

from jaxrec.errors import UserError
from jaxrec.eval.offpolicy.decision_log import DecisionLog
from jaxrec.rerank.posteriors import BetaPosteriors
from jaxrec.retrieval.bundle import complete_versions, latest_version
from jaxrec.serve.posterior_store import RedisPosteriors, StoreUnavailable, connect
from serving.batcher import Batcher, Overloaded
from serving.feedback_guard import IssuedRequests, RateLimiter, SharedIssuedRequests, authorized
from serving.limits import Admission, BodyLimit, ServerLimits
from jaxrec.serve.recommender import BUCKETS, Request, ServingConfig
from serving.model_process import (LOADING_NICE, Closed, ModelProcess, ReplicatedPosteriors,
                                   may_restore_priority, place, split_cpus)


# Every value a request carries is bounded and typed here, before it reaches a batch: ids and
# lists have lengths, integers are strict (no "10", no true) and in range.
MAX_ID = 256  # characters of a user, item or request id
MAX_LIST = 10_000  # entries of any list
LATEST_TIMESTAMP = 32_503_680_000  # 3000-01-01 in Unix seconds

Id = Annotated[str, StringConstraints(min_length=1, max_length=MAX_ID)]


ROUTES = ("/v1/recommend", "/v1/similar", "/v1/feedback", "/healthz", "/readyz", "/metrics")


class Strict(BaseModel):
  model_config = ConfigDict(extra="forbid")


class HistoryItem(Strict):
  item_id: Id
  timestamp: StrictInt = Field(ge=0, le=LATEST_TIMESTAMP, description="Unix seconds")


class Context(Strict):
  device: Id | None = None
  hour: StrictInt | None = Field(None, ge=0, le=23, description="hour of day, 0-23 (UTC)")


class Filters(Strict):
  genres: list[Id] = Field([], max_length=MAX_LIST,
                           description="only items with at least one of these genres")


class RecommendBody(Strict):
  user_id: Id | None = None
  history: list[HistoryItem] = Field([], max_length=MAX_LIST)
  context: Context = Context()
  k: StrictInt = 20
  exclude: list[Id] = Field([], max_length=MAX_LIST)
  filters: Filters = Filters()


class SimilarBody(Strict):
  item_id: Id
  k: StrictInt = 20


class Outcome(Strict):
  request_id: Id = Field(description="the request_id of the /v1/recommend answer that showed "
                         "the item")
  item_id: Id
  impressions: StrictInt = Field(1, ge=0, le=1, description="one showing: 0 or 1")
  engagements: StrictInt = Field(0, ge=0, le=1, description="engaged with it: 0 or 1")


class FeedbackBody(Strict):
  events: list[Outcome] = Field(max_length=MAX_LIST)


class Metrics:
  def __init__(self):
    self.registry = CollectorRegistry()
    self.requests = Counter("jaxrec_requests", "HTTP requests", ["endpoint", "status"],
                            registry=self.registry)
    self.latency = Histogram("jaxrec_stage_seconds", "latency per pipeline stage", ["stage"],
                             buckets=(.001, .0025, .005, .01, .02, .03, .05, .075, .1, .25, .5, 1),
                             registry=self.registry)
    self.reloads = Counter("jaxrec_reloads", "bundle loads", ["result"], registry=self.registry)
    self.version = Gauge("jaxrec_model_version", "the bundle version serving",
                         registry=self.registry)


def files_signature(path: str) -> tuple:
  """(relative name, size, mtime) of every file under `path`: changes when a copy progresses."""
  found = []
  for folder, _, names in os.walk(path):
    for name in names:
      with contextlib.suppress(OSError):  # removed meanwhile: the next look sees the change
        stat = os.stat(os.path.join(folder, name))
        found.append((os.path.relpath(os.path.join(folder, name), path), stat.st_size,
                      stat.st_mtime_ns))
  return tuple(sorted(found))


class Service:
  def __init__(self, export_root: str, config: ServingConfig, max_batch: int, max_wait_ms: float,
               max_queue: int, posteriors=None, state_url: str | None = None):
    """posteriors: a shared store reached at `state_url`, or None: counts kept in this process."""
    self.export_root = os.path.abspath(export_root)  # versions compare as absolute paths
    self.config = config
    self.state_url = state_url
    self.posteriors = posteriors if posteriors is not None else \
        ReplicatedPosteriors(BetaPosteriors(0))
    # One loader thread: at most one bundle loads at a time (in its own process; this thread
    # only starts it and waits).
    self.loader = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="loader")
    self.cpus = _usable_cpus()
    self.renice = may_restore_priority()
    self.current: ModelProcess | None = None
    # Refused bundle -> its files' (name, size, mtime) when refused: retried once they change (a
    # copy still in progress completes), never reloaded while they stay the same.
    self.refused: dict[str, tuple] = {}
    self.metrics = Metrics()
    self.batcher = Batcher(self._answer, max_batch=min(max_batch, BUCKETS[-1]),
                           max_wait_ms=max_wait_ms, max_queue=max_queue)

  def _answer(self, requests: list[Request]) -> list[dict]:
    while True:  # one version for the whole batch: the one current when it is sent
      try:
        return self.current.recommend(requests)
      except Closed:
        continue

  def load(self, path: str) -> bool:
    """Loads and warms up the bundle at `path` in a new model process and swaps it in; False
    (old one kept) if it fails. Run it on the loader thread (`await
    service.load_in_background(path)`)."""
    old = self.current
    # While it loads, live traffic (this process and the live model's) keeps most CPUs and the
    # new process gets the rest, at a lower priority (for whatever else shares them); once it
    # serves, it gets every CPU and this process's priority. The first load has both.
    reload = old is not None and old.alive
    split = split_cpus(self.cpus) if reload else None
    if split:
      place(os.getpid(), split[0])
      place(old.pid, split[0])
    try:
      model = ModelProcess(path, self.config, self.posteriors, state_url=self.state_url,
                           max_batch=self.batcher.max_batch, cpus=split[1] if split else None,
                           nice=LOADING_NICE if reload and self.renice else 0)
    except Exception as e:  # any failure refuses the bundle: the service must keep serving
      logging.error("refusing bundle %s: %s", path, e)
      self.refused[path] = files_signature(path)
      self.metrics.reloads.labels("refused").inc()
      return False
    finally:
      if split:
        place(os.getpid(), self.cpus)
        place(old.pid, self.cpus)
    place(model.pid, self.cpus, os.getpriority(os.PRIO_PROCESS, 0) if self.renice else None)
    self.current = model
    if old is not None:  # a batch it is answering finishes first (its lock), then it stops
      old.close()
    self.metrics.reloads.labels("loaded").inc()
    self.metrics.version.set(int(os.path.basename(path)))
    logging.info("serving bundle %s (model process %d)", path, model.pid)
    return True

  def similar(self, item_id: str, k: int):
    """(the version that answered, its answer)."""
    while True:
      model = self.current
      try:
        return model, model.similar(item_id, k)
      except Closed:
        continue

  async def watch(self, interval: float) -> None:
    while True:
      await asyncio.sleep(interval)
      try:
        path = latest_version(self.export_root)
      except UserError:
        continue
      if path == getattr(self.current, "path", None) and self.current.alive:
        continue  # a model process that died is started again
      if path not in self.refused or self.refused[path] != files_signature(path):
        await self.load_in_background(path)

  async def load_in_background(self, path: str) -> bool:
    return await asyncio.get_running_loop().run_in_executor(self.loader, self.load, path)

  def close(self) -> None:
    self.loader.shutdown(wait=False, cancel_futures=True)
    if self.current is not None:
      self.current.close()


def _usable_cpus() -> set[int] | None:
  with contextlib.suppress(AttributeError):  # no CPU sets on this platform: nothing is pinned
    return os.sched_getaffinity(0)
  return None


def create_app(export_root: str, config: ServingConfig | None = None, *, max_batch: int = 8,
               max_wait_ms: float = 2.0, max_queue: int = 256, reload_interval: float = 2.0,
               decision_log: str | None = None, api_key: str | None = None,
               feedback_rate: float = 20.0, feedback_burst: int = 40,
               limits: ServerLimits = ServerLimits(), state: str | None = None,
               issued_ttl: int = 3600) -> FastAPI:
  """api_key: required (`Authorization: Bearer KEY`) on state-changing endpoints; feedback_rate
  and feedback_burst: each client's token bucket for /v1/feedback (per replica); limits: the
  body's size and read time (the connection limits are the server's: limits.server_config);
  state: a Redis URL holding the exploration state, shared by replicas (None: in the process);
  issued_ttl: with a store, how long (seconds) feedback may quote an answer."""
  config = config or ServingConfig()
  if state:
    client = connect(state)
    posteriors, issued = RedisPosteriors(client), SharedIssuedRequests(client, ttl=issued_ttl)
  else:
    posteriors, issued = None, IssuedRequests()
  service = Service(export_root, config, max_batch, max_wait_ms, max_queue,
                    posteriors if state else None, state)
  decisions = DecisionLog(decision_log) if decision_log else None
  feedback_limiter = RateLimiter(feedback_rate, feedback_burst)

  async def store(function, *args):
    """A call on the exploration state: off the event loop when it is a network round trip."""
    return await asyncio.to_thread(function, *args) if state else function(*args)

  @contextlib.asynccontextmanager
  async def lifespan(app):
    # The newest bundle that loads; none at all: refuse to start, with the message.
    versions = complete_versions(service.export_root)
    for path in versions:
      if await service.load_in_background(path):
        break
    else:
      raise UserError(f"none of the bundles in {export_root} could be loaded (see the log): "
                      "export one again.")
    service.batcher.start()
    watcher = asyncio.create_task(service.watch(reload_interval))
    yield
    watcher.cancel()
    await service.batcher.stop()
    service.close()
    if decisions is not None:
      decisions.close()

  app = FastAPI(title="jaxrec", lifespan=lifespan,
                description="Retrieval -> multi-task ranking -> re-ranking, from export bundles.")
  app.state.service = service
  metrics = service.metrics

  def count(path: str, status: int) -> None:
    # Only the service's own routes get a label of their own: any path a client invents would
    # otherwise grow the metric without bound.
    metrics.requests.labels(path if path in ROUTES else "other", str(status)).inc()

  def error(status: int, message: str, endpoint: str) -> JSONResponse:
    count(endpoint, status)
    return JSONResponse({"error": message}, status_code=status)

  # The last added runs first: BodyLimit, then admission (a fast 503 before parsing).
  app.add_middleware(Admission, path="/v1/recommend", refusal=service.batcher.refusal,
                     on_refused=count)
  app.add_middleware(BodyLimit, max_body_bytes=limits.max_body_bytes,
                     body_timeout=limits.body_timeout, on_refused=count)

  @app.exception_handler(RequestValidationError)
  async def invalid(request: HttpRequest, exc: RequestValidationError):
    problems = "; ".join(f"{'.'.join(str(p) for p in e['loc'] if p != 'body') or 'body'}: "
                         f"{e['msg']}" for e in exc.errors())
    return error(422, f"invalid request: {problems}", request.url.path)

  @app.exception_handler(UserError)
  async def refused(request: HttpRequest, exc: UserError):
    return error(400, str(exc), request.url.path)

  @app.exception_handler(Exception)
  async def failed(request: HttpRequest, exc: Exception):  # counted, and only this request fails
    logging.exception("%s failed", request.url.path)
    return error(500, "internal error; the request was not served (see the server log).",
                 request.url.path)

  @app.post("/v1/recommend")
  async def recommend(body: RecommendBody):
    endpoint = "/v1/recommend"
    if not 1 <= body.k <= config.max_k:
      return error(400, f"k must be between 1 and {config.max_k}, got {body.k}.", endpoint)
    if len(body.history) > config.max_history:
      return error(400, f"history has {len(body.history)} items; send at most "
                        f"{config.max_history} (the most recent).", endpoint)
    unknown = service.current.unknown_genres(body.filters.genres)
    if unknown:
      return error(400, f"unknown genres {unknown} in filters.genres.", endpoint)
    request = Request(user_id=body.user_id,
                      history=[(h.item_id, h.timestamp) for h in body.history],
                      device=body.context.device, hour=body.context.hour, k=body.k,
                      exclude=body.exclude, genres=body.filters.genres, now=int(time.time()))
    started = time.perf_counter()
    try:
      response = await service.batcher.submit(request)
    except Overloaded as e:
      return error(503, f"overloaded: {e}; retry shortly.", endpoint)
    metrics.latency.labels("total").observe(time.perf_counter() - started)
    for stage, ms in response["timings_ms"].items():
      if stage != "total":
        metrics.latency.labels(stage).observe(ms / 1000)
    shown = [item["item_id"] for item in response["items"]]
    try:
      response["request_id"] = await store(issued.issue, shown)
    except Exception:  # the store is down: the answer still goes out; feedback on it gets 409
      logging.exception("could not record the answer in the exploration store")
      response["request_id"] = uuid.uuid4().hex
    if decisions is not None:
      decisions.decision(response["request_id"], body.user_id, response, time.time())
    metrics.requests.labels(endpoint, "200").inc()
    # Already plain JSON types: JSONResponse skips FastAPI's jsonable_encoder walk of every item
    # (about a millisecond a request of the event loop's time at k = 20).
    return JSONResponse(response)

  @app.post("/v1/similar")
  async def similar(body: SimilarBody):
    if not 1 <= body.k <= config.max_k:
      return error(400, f"k must be between 1 and {config.max_k}, got {body.k}.", "/v1/similar")
    try:
      model, items = await asyncio.to_thread(service.similar, body.item_id, body.k)
    except KeyError:
      return error(404, f"unknown item_id {body.item_id!r}.", "/v1/similar")
    metrics.requests.labels("/v1/similar", "200").inc()
    return {"items": items, "model_version": model.version}

  @app.post("/v1/feedback")
  async def feedback(body: FeedbackBody, http: HttpRequest):
    endpoint = "/v1/feedback"
    if not authorized(api_key, http.headers.get("authorization")):
      return error(401, "feedback needs the service's API key: send `Authorization: Bearer "
                        "KEY`.", endpoint)
    if not feedback_limiter.allow(http.client.host if http.client else "unknown"):
      return error(429, "too many feedback requests from this client; slow down.", endpoint)
    if any(e.engagements > e.impressions for e in body.events):
      return error(400, "an event has more engagements than impressions.", endpoint)
    try:
      problems = await store(issued.claim, [(e.request_id, e.item_id) for e in body.events])
    except Exception as e:  # nothing was claimed: the client may send it again
      logging.error("exploration store: %s", e)
      return error(503, "the exploration store is unavailable; retry shortly.", endpoint)
    if problems:  # nothing is counted or logged as a reward
      return error(409, f"feedback refused: {'; '.join(problems[:5])}"
                        + (f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""),
                   endpoint)
    recommender = service.current
    ids = recommender.item_ids([e.item_id for e in body.events])
    known = ids >= 2
    try:
      await store(recommender.posteriors.update, ids[known],
                  [e.impressions for e, k in zip(body.events, known) if k],
                  [e.engagements for e, k in zip(body.events, known) if k])
    except StoreUnavailable as e:
      logging.error("%s", e)
      return error(503, "the exploration store did not take the feedback; it was not counted.",
                   endpoint)
    if decisions is not None:
      decisions.feedback(body.events, time.time())
    metrics.requests.labels(endpoint, "200").inc()
    return {"updated": int(known.sum()),
            "unknown_items": [e.item_id for e, k in zip(body.events, known) if not k]}

  @app.get("/healthz")
  async def healthz():
    return {"status": "ok"}

  @app.get("/readyz")
  async def readyz():
    if service.current is None:
      return JSONResponse({"status": "loading"}, status_code=503)
    return {"status": "ready", "model_version": service.current.version}

  @app.get("/metrics")
  async def prometheus():
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

  return app
