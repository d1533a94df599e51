"""`jaxrec serve` in a process of its own, for the demo and the latency benchmark: started on a
local port and returned once it answers /readyz (its bundle loaded and warmed up)."""

from __future__ import annotations

import contextlib
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
def running_server(export_root: str, port: int | None = None, timeout: float = 600):
  """Yields the server's base URL while it runs; stops it on exit."""
  port = port or free_port()
  url = f"http://127.0.0.1:{port}"
  server = subprocess.Popen([sys.executable, "-m", "jaxrec.cli", "serve", "--export", export_root,
                             "--port", str(port)])
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
