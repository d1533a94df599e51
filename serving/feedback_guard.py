"""Who may change the exploration state, and by how much.

Feedback moves the Thompson-sampling posteriors that decide which new items every user is shown,
so it is guarded three ways:
  - an API key (`jaxrec serve --api-key`), compared in constant time, on every state-changing
    endpoint;
  - a per-client token bucket, so one client cannot flood it;
  - every event must quote a request_id this service issued and an item that answer showed; each
    (request, item) counts once, for at most one impression and one engagement. An attacker can
    then move an item's posterior only as far as real showings of it allow.
With `jaxrec serve --state redis://...` the answers are kept in Redis (SharedIssuedRequests), so
feedback on one replica's answer is accepted by any replica, once; the rate limit stays per replica.
"""

from __future__ import annotations

import collections
import hmac
import os
import threading
import time
import uuid

from jaxrec.errors import UserError

API_KEY_ENV = "JAXREC_API_KEY"


def resolve_api_key(key: str | None = None, key_file: str | None = None) -> str | None:
  """The key from --api-key, else --api-key-file, else $JAXREC_API_KEY; None: no key."""
  if key and key_file:
    raise UserError("pass --api-key or --api-key-file, not both.")
  if key_file:
    try:
      with open(key_file) as f:
        key = f.read().strip()
    except OSError as e:
      raise UserError(f"--api-key-file {key_file}: cannot read it ({e}).") from e
  key = key or os.environ.get(API_KEY_ENV) or None
  if key is not None and len(key) < 16:
    raise UserError("the API key must be at least 16 characters; generate one with "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`.")
  return key


def authorized(api_key: str | None, header: str | None) -> bool:
  """Whether an `Authorization` header carries the key (always, when no key is set)."""
  if api_key is None:
    return True
  expected = f"Bearer {api_key}".encode()
  return hmac.compare_digest(expected, (header or "").encode())


class RateLimiter:
  """A token bucket per client: `rate` requests a second, bursts of up to `burst`."""

  def __init__(self, rate: float, burst: int, max_clients: int = 100_000):
    self.rate, self.burst, self.max_clients = float(rate), float(burst), max_clients
    self._buckets: collections.OrderedDict[str, tuple[float, float]] = collections.OrderedDict()
    self._lock = threading.Lock()

  def allow(self, client: str) -> bool:
    now = time.monotonic()
    with self._lock:
      tokens, last = self._buckets.pop(client, (self.burst, now))
      tokens = min(self.burst, tokens + (now - last) * self.rate)
      allowed = tokens >= 1
      self._buckets[client] = (tokens - 1 if allowed else tokens, now)
      while len(self._buckets) > self.max_clients:  # forget the longest idle
        self._buckets.popitem(last=False)
      return allowed


class IssuedRequests:
  """The request ids this service answered recently, with the items each showed; feedback is
  accepted once per (request, item). Bounded: the oldest answers are forgotten first."""

  def __init__(self, capacity: int = 200_000):
    self.capacity = capacity
    self._shown: collections.OrderedDict[str, set[str]] = collections.OrderedDict()
    self._lock = threading.Lock()

  def issue(self, items: list[str]) -> str:
    request_id = uuid.uuid4().hex
    with self._lock:
      self._shown[request_id] = set(items)
      while len(self._shown) > self.capacity:
        self._shown.popitem(last=False)
    return request_id

  def claim(self, pairs: list[tuple[str, str]]) -> list[str]:
    """Consumes every (request_id, item_id) pair, all or none; returns the problems (empty when
    every pair was shown and not reported before)."""
    with self._lock:
      problems, seen = [], set()
      for request_id, item in pairs:
        shown = self._shown.get(request_id)
        if shown is None:
          problems.append(_problem(1, request_id, item))
        elif item not in shown or (request_id, item) in seen:
          problems.append(_problem(2, request_id, item))
        seen.add((request_id, item))
      if not problems:
        for request_id, item in pairs:
          self._shown[request_id].discard(item)
      return problems


# KEYS: none (built from ARGV[1], the prefix); ARGV: prefix, then request_id, item pairs.
# Returns one code per pair: 0 shown and not yet counted, 1 request not issued (or expired),
# 2 item not shown by it, or already counted; consumes the pairs only when every code is 0.
_CLAIM = """
local prefix, codes, seen, bad = ARGV[1], {}, {}, false
for i = 2, #ARGV, 2 do
  local key, item = prefix .. ARGV[i], ARGV[i + 1]
  local pair = ARGV[i] .. '\\0' .. item
  local code = 0
  if redis.call('EXISTS', key) == 0 then code = 1
  elseif item == '' then code = 2
  elseif seen[pair] or redis.call('SISMEMBER', key, item) == 0 then code = 2 end
  seen[pair] = true
  codes[#codes + 1] = code
  if code > 0 then bad = true end
end
if not bad then
  for i = 2, #ARGV, 2 do redis.call('SREM', prefix .. ARGV[i], ARGV[i + 1]) end
end
return codes
"""


class SharedIssuedRequests:
  """IssuedRequests in Redis (`jaxrec serve --state`), so that feedback on an answer one replica
  gave is accepted by any replica: a set of shown items per request_id, kept `ttl` seconds, and
  claimed atomically by a Lua script (all pairs or none, each once)."""

  def __init__(self, client, namespace: str = "jaxrec:issued", ttl: int = 3600):
    self.client, self.prefix, self.ttl = client, namespace + ":", int(ttl)
    self._claim = client.register_script(_CLAIM)

  def issue(self, items: list[str]) -> str:
    request_id = uuid.uuid4().hex
    key = self.prefix + request_id
    pipe = self.client.pipeline(transaction=True)
    pipe.sadd(key, "", *items)  # "": the set exists even for an empty answer; no item id is ""
    pipe.expire(key, self.ttl)
    pipe.execute()
    return request_id

  def claim(self, pairs: list[tuple[str, str]]) -> list[str]:
    if not pairs:
      return []
    codes = self._claim(args=[self.prefix, *[x for pair in pairs for x in pair]])
    return [_problem(code, request_id, item) for code, (request_id, item) in zip(codes, pairs)
            if code]


def _problem(code: int, request_id: str, item: str) -> str:
  if code == 1:
    return f"request_id {request_id!r} was not issued by this service (or is too old)"
  return (f"item {item!r} was not shown by request {request_id!r}, or its feedback was already "
          "counted")
