"""Exploration posteriors in Redis, shared by every replica that names the same store and kept
across restarts (`jaxrec serve --state redis://HOST:PORT/DB`).

Counts are keyed by the item's raw id, not the bundle's item index, so replicas serving different
bundle versions (a reload in progress, a catalogue that gained items) count the same item as one.
Each item has two integer keys, `{namespace}:i:{raw id}` (impressions) and `{namespace}:e:{raw id}`
(engagements). Plain keys rather than one hash: HMGET on a small hash (Redis keeps it as a
listpack) scans it once per field, ~20 ms for 1,000 candidates here, where MGET is ~0.2 ms.

Both operations are Lua scripts, so each runs atomically on the server:
  - update: per item, INCRBY saturating at MAX_COUNT, exactly as BetaPosteriors does in process
    (rows checked and summed per item first by the same function), so engagements <= impressions
    holds whatever concurrent replicas send;
  - read: impressions and engagements of every requested item in one MGET, returned as one
    string (a reply of thousands of values costs redis-py's parser ~20 ms; one string ~0.1 ms).

Scripts build their key names from ARGV, so this needs a single Redis (or a primary), not a
cluster. When the store cannot be read, no item is explored (the ranking fills the slot) and the
failure is logged, at most once every 10 s; feedback that cannot be written raises
StoreUnavailable, which the service answers with 503.
"""

from __future__ import annotations

import logging
import time
import urllib.parse

import numpy as np

from jaxrec.errors import UserError
from jaxrec.rerank.posteriors import MAX_COUNT, beta_draws, checked_ids, summed_feedback

DEFAULT_NAMESPACE = "jaxrec:posteriors"
_CHUNK = 1000  # keys per MGET inside the script (Lua's unpack has a stack limit)

# ARGV: the prefix, then the items' keys, each followed by a newline, in one argument (packing a
# thousand arguments costs redis-py ~5 ms; one string, microseconds).
READ = """
local prefix, keys, out = ARGV[1], {}, {}
for id in string.gmatch(ARGV[2], '[^\\n]+') do
  keys[#keys + 1] = prefix .. 'i:' .. id
  keys[#keys + 1] = prefix .. 'e:' .. id
end
for s = 1, #keys, %d do
  local values = redis.call('MGET', unpack(keys, s, math.min(s + %d, #keys)))
  for i = 1, #values do out[#out + 1] = values[i] or '0' end
end
return table.concat(out, ' ')
""" % (_CHUNK, _CHUNK - 1)

UPDATE = """
local prefix, max = ARGV[1], tonumber(ARGV[2])
for i = 3, #ARGV, 3 do
  local shown = prefix .. 'i:' .. ARGV[i]
  local engaged = prefix .. 'e:' .. ARGV[i]
  for j, key in ipairs({shown, engaged}) do
    local add = tonumber(ARGV[i + j])
    if add > 0 then
      local now = tonumber(redis.call('GET', key) or '0')
      local new = math.min(now + add, max)
      if new > now then redis.call('INCRBY', key, string.format('%.0f', new - now)) end
    end
  end
end
return 1
"""


def item_key(raw_id) -> str:
  """An item's name in the store: its raw id, with '%' and newlines escaped (READ splits on
  newlines)."""
  return str(raw_id).replace("%", "%25").replace("\n", "%0A")


class StoreUnavailable(Exception):
  """The shared store could not be reached or answered an error."""


def connect(url: str, timeout: float = 1.0):
  """A redis-py client for `redis://[:password@]host:port/db` (or rediss://, unix://), checked
  with a PING; a UserError naming the fix when the package is missing or nothing answers."""
  scheme = urllib.parse.urlsplit(url).scheme
  if scheme not in ("redis", "rediss", "unix"):
    raise UserError(f"--state {url!r}: expected redis://HOST:PORT/DB (or rediss://, unix://); "
                    "leave it out to keep the exploration state in the process.")
  try:
    import redis
  except ModuleNotFoundError as e:
    raise UserError("a shared --state store needs the redis client: pip install "
                    "'jaxrec[serve]'") from e
  client = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
  try:
    client.ping()
  except redis.RedisError as e:
    raise UserError(f"--state {url}: the store does not answer ({e}); start Redis there "
                    "(e.g. `redis-server --port 6379 --appendonly yes`) or fix the address.") from e
  return client


class RedisPosteriors:
  """Beta(alpha0 + engagements, beta0 + impressions - engagements) per item, with the counts in
  Redis. Serving reads it through `for_catalogue(raw ids)`, which speaks item indices."""

  def __init__(self, client, namespace: str = DEFAULT_NAMESPACE, alpha0: float = 1.0,
               beta0: float = 1.0, retry_after: float = 1.0):
    if not (alpha0 > 0 and beta0 > 0):
      raise UserError(f"alpha0 and beta0 must be positive, got {alpha0} and {beta0}.")
    self.client, self.alpha0, self.beta0 = client, float(alpha0), float(beta0)
    self.prefix = namespace + ":"
    self.retry_after = retry_after  # after a failed read, the store is left alone this long
    self._read = client.register_script(READ)
    self._update = client.register_script(UPDATE)
    self._down_until = 0.0
    self._last_logged = 0.0

  @classmethod
  def from_url(cls, url: str, **kwargs) -> RedisPosteriors:
    return cls(connect(url), **kwargs)

  def counts(self, packed: bytes) -> np.ndarray | None:
    """[2, B] impressions and engagements of B items, named by `packed` (each item_key, then a
    newline); None when the store cannot be read (then it is left alone `retry_after` s)."""
    if not packed:
      return np.zeros((2, 0), np.int64)
    if time.monotonic() < self._down_until:
      return None
    try:
      reply = self._read(args=[self.prefix, packed])
    except Exception as e:  # any store failure: serve without exploration, never fail a request
      self._down_until = time.monotonic() + self.retry_after
      if time.monotonic() - self._last_logged > 10:
        self._last_logged = time.monotonic()
        logging.error("exploration store unreadable (%s): no item is explored until it answers",
                      e)
      return None
    counts = np.array(reply.split(), np.int64).reshape(-1, 2).T
    counts[1] = np.minimum(counts[1], counts[0])  # keeps Beta's parameters positive regardless
    return counts

  def add(self, keys, impressions, engagements) -> None:
    """Adds feedback rows for the items with these keys (item_key of the raw ids; checked and
    summed like BetaPosteriors.update), saturating at MAX_COUNT, atomically on the server."""
    unique, added = summed_feedback(np.asarray(keys, dtype=str), impressions, engagements)
    args = [self.prefix, MAX_COUNT]
    for key, shown, engaged in zip(unique, added[0], added[1]):
      args += [str(key), int(shown), int(engaged)]
    if len(args) == 2:
      return
    try:
      self._update(args=args)
    except Exception as e:
      raise StoreUnavailable(f"the exploration store did not take the feedback: {e}") from e

  def for_catalogue(self, item_keys) -> CatalogueView:
    return CatalogueView(self, item_keys)


class CatalogueView:
  """RedisPosteriors as one bundle sees it: item indices (as BetaPosteriors takes them) mapped to
  raw ids through `item_keys`. What exploration calls: impressions, engagements, sample, update."""

  def __init__(self, store: RedisPosteriors, item_keys):
    self.store = store
    self.keys = np.asarray([item_key(k) for k in item_keys], dtype=object)
    self.packed = np.asarray([(k + "\n").encode() for k in self.keys], dtype=object)
    self.alpha0, self.beta0 = store.alpha0, store.beta0

  @property
  def num_items(self) -> int:
    return len(self.keys)

  def _keys(self, items) -> np.ndarray:
    return self.keys[checked_ids(items, len(self.keys))]

  def _counts(self, items) -> np.ndarray | None:
    return self.store.counts(b"".join(self.packed[checked_ids(items, len(self.keys))]))

  def impressions(self, items) -> np.ndarray:
    """Unreadable store: every item reads as saturated, so none is explored."""
    counts = self._counts(items)
    return np.full(len(items), MAX_COUNT, np.int64) if counts is None else counts[0]

  def engagements(self, items) -> np.ndarray:
    counts = self._counts(items)
    return np.zeros(len(items), np.int64) if counts is None else counts[1]

  def sample(self, items, rng: np.random.Generator, draws: int | None = None) -> np.ndarray:
    counts = self._counts(items)
    if counts is None:  # the prior alone
      counts = np.zeros((2, len(items)), np.int64)
    return beta_draws(counts[0], counts[1], self.alpha0, self.beta0, rng, draws)

  def update(self, items, impressions, engagements) -> None:
    self.store.add(self._keys(items), impressions, engagements)
