"""Server limits, so that slow, idle or huge clients cannot hurt anyone else's request.

uvicorn does most of it: a cap on concurrent connections (`limit_concurrency`: 503 beyond), a
keep-alive timeout, a cap on the request head's size. Two things it lacks are added here:
  - `GuardedH11`: a connection must send a complete request head within the idle timeout of
    opening (uvicorn's keep-alive timer only starts after a first response, so a client that
    connects and sends nothing, or trickles its headers, would otherwise hold a socket forever);
  - `BodyLimit` (ASGI middleware): the body is refused with 413 when its Content-Length or its
    bytes exceed `max_body_bytes`, and with 408 when it does not arrive within
    `body_timeout` seconds; it is read before the app sees it, so no handler waits on a slow body.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol


@dataclasses.dataclass(frozen=True)
class ServerLimits:
  max_body_bytes: int = 1 << 20  # the largest valid request (10,000 feedback events) fits
  body_timeout: float = 10.0  # seconds for a whole body to arrive
  idle_timeout: int = 5  # seconds for a request head to arrive, and between requests
  max_connections: int = 4096  # beyond: 503 at once
  max_head_bytes: int = 16 * 1024


class GuardedH11(H11Protocol):
  def connection_made(self, transport) -> None:
    super().connection_made(transport)
    self.timeout_keep_alive_task = self.loop.call_later(self.timeout_keep_alive,
                                                        self.timeout_keep_alive_handler)

  def data_received(self, data: bytes) -> None:
    # Unlike uvicorn's, data does not stop the timer: only a complete request head does
    # (handle_events unsets it on h11.Request), so a trickled head times out too.
    self.conn.receive_data(data)
    self.handle_events()


class BodyLimit:
  def __init__(self, app, max_body_bytes: int, body_timeout: float, on_refused=None):
    self.app, self.max_bytes, self.timeout = app, max_body_bytes, body_timeout
    self.on_refused = on_refused or (lambda path, status: None)

  async def __call__(self, scope, receive, send):
    if scope["type"] != "http":
      return await self.app(scope, receive, send)
    length = dict(scope["headers"]).get(b"content-length", b"0")
    if not length.isdigit() or int(length) > self.max_bytes:
      return await self._refuse(scope, send, 413, f"the body is over {self.max_bytes} bytes")
    chunks, size = [], 0
    deadline = asyncio.get_running_loop().time() + self.timeout
    while True:
      try:
        message = await asyncio.wait_for(receive(),
                                         deadline - asyncio.get_running_loop().time())
      except TimeoutError:
        return await self._refuse(scope, send, 408,
                                  f"the body did not arrive within {self.timeout:g} s")
      if message["type"] == "http.disconnect":
        return None
      size += len(message.get("body", b""))
      if size > self.max_bytes:
        return await self._refuse(scope, send, 413, f"the body is over {self.max_bytes} bytes")
      chunks.append(message.get("body", b""))
      if not message.get("more_body"):
        break
    body, replayed = b"".join(chunks), False

    async def replay():
      nonlocal replayed
      if not replayed:
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}
      return await receive()

    return await self.app(scope, replay, send)

  async def _refuse(self, scope, send, status: int, message: str) -> None:
    self.on_refused(scope["path"], status)
    await respond(send, status, message, close=True)


async def respond(send, status: int, message: str, close: bool = False) -> None:
  """A JSON error answer straight from ASGI middleware."""
  body = json.dumps({"error": message}).encode()
  headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
  await send({"type": "http.response.start", "status": status,
              "headers": headers + ([(b"connection", b"close")] if close else [])})
  await send({"type": "http.response.body", "body": body})


class Admission:
  """503 for `path` before routing and validation when `refusal()` gives a reason: under overload
  a refusal must cost less than the work it saves. Inside BodyLimit (the body is read, bounded),
  so the connection stays reusable."""

  def __init__(self, app, path: str, refusal, on_refused):
    self.app, self.path, self.refusal, self.on_refused = app, path, refusal, on_refused

  async def __call__(self, scope, receive, send):
    if scope["type"] == "http" and scope["path"] == self.path:
      reason = self.refusal()
      if reason:
        self.on_refused(self.path, 503)
        return await respond(send, 503, f"overloaded: {reason}; retry shortly.")
    return await self.app(scope, receive, send)


def server_config(app, host: str, port: int, limits: ServerLimits = ServerLimits(),
                  **kwargs) -> uvicorn.Config:
  """The uvicorn config `jaxrec serve` (and the tests) run the app under."""
  return uvicorn.Config(app, host=host, port=port, http=GuardedH11,
                        limit_concurrency=limits.max_connections,
                        timeout_keep_alive=limits.idle_timeout,
                        h11_max_incomplete_event_size=limits.max_head_bytes,
                        log_level="warning", **kwargs)
