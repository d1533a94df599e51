"""What was popular at a given moment of a log, counted only from what happened before it.

Forward in time the strongest single signal is what everyone has been watching lately (a list of
the last weeks' most watched items beats every learned model that ignores it). These helpers give
the recent-popularity baselines (baselines/popularity.py) and the sequential models' trend prior
(train/sequential.py, `model.trend_window_days`) the same notion of "before the request":

  request_times   each user's request time on a split (the cut-off, or the held-out item's time);
  history_pool    every interaction a split may count (each user's tokens before its window);
  TrendTable      item counts over [t - W, t), over the last day and over [.., t), and each
                  item's age at t, from cumulative counts per time bucket: a table small enough
                  to sit on the accelerator, so a training step reads every position's
                  features at its own target time.
"""

from __future__ import annotations

import math

import numpy as np

from jaxrec.data import pipelines
from jaxrec.data.vocab import FIRST_ID

DAY = 86400.0
# The table holds at most this many counts (64 MiB of float32): the bucket grows with the log's
# span times the catalogue, never below an hour.
MAX_TABLE_ENTRIES = 1 << 24
MIN_BUCKET_SECONDS = 3600.0
# What is trending this very day, beside the window's slower trend (never shorter than a bucket).
SHORT_WINDOW_SECONDS = DAY
NUM_FEATURES = 4  # TrendTable.features' width


def request_times(ds, split: str) -> np.ndarray:
  """[num_users] the request time (Unix seconds) of each user's evaluation on `split`: the split's
  cut-off on a temporal split, else the user's first held-out interaction (0 where none)."""
  description = ds.manifest["split"]
  if description["kind"] == "temporal":
    return np.full(ds.num_users, float(description["t1" if split == "valid" else "t2"]))
  lo, hi = pipelines._split_range(ds, split)
  tokens = ds.user_tokens(np.arange(ds.num_users) + FIRST_ID)
  return np.array([float(t["timestamp"][lo[r]]) if hi[r] > lo[r] else 0.0
                   for r, t in enumerate(tokens)])


def history_pool(ds, split: str | None) -> tuple[np.ndarray, np.ndarray]:
  """(timestamps, items) of every interaction before `split` (each user's tokens before its
  window; None: every interaction of the log), sorted by time."""
  tokens = ds.user_tokens(np.arange(ds.num_users) + FIRST_ID)
  if split is not None:
    lo, _ = pipelines._split_range(ds, split)
    tokens = [t[:lo[r]] for r, t in enumerate(tokens)]
  stamps = np.concatenate([t["timestamp"] for t in tokens] + [np.zeros(0)]).astype(np.float64)
  items = np.concatenate([t["item"] for t in tokens] + [np.zeros(0, np.int64)]).astype(np.int64)
  order = np.argsort(stamps, kind="stable")
  return stamps[order], items[order]


class TrendTable:
  """Cumulative item counts by time bucket: `cumulative[k, v]` = interactions with item v in the
  buckets before bucket k. Counts at time t cover the complete buckets before t's own, so a
  request never sees its own bucket (at most one bucket of lag, an hour on small logs)."""

  def __init__(self, stamps: np.ndarray, items: np.ndarray, num_items: int, window_days: float,
               start: float | None = None):
    if window_days <= 0:
      raise ValueError(f"the trend window must be positive, got {window_days} days")
    self.window = float(window_days) * DAY
    self.start = float(stamps.min(initial=0.0) if start is None else start)
    span = max(float(stamps.max(initial=self.start)) - self.start, 1.0)
    self.bucket = max(MIN_BUCKET_SECONDS, math.ceil(span * num_items / MAX_TABLE_ENTRIES))
    last = int(span // self.bucket)
    counts = np.zeros((last + 2, num_items), np.float32)
    buckets = np.clip(((stamps - self.start) // self.bucket).astype(np.int64), 0, last)
    np.add.at(counts, (buckets + 1, items), 1.0)
    self.cumulative = np.cumsum(counts, axis=0)  # row k: every bucket before k
    # Each item's first bucket's start (its release, as far as the log knows); never seen: inf.
    seen = self.cumulative[-1] > 0
    first = np.argmax(self.cumulative > 0, axis=0) - 1
    self.first_seen = np.where(seen, self.start + first * self.bucket, np.inf).astype(np.float32)

  def rows(self, times, xp=np, window=None):
    """(row of t's bucket, row of (t - window)'s bucket; window: W) for times of any shape,
    clipped to the table; `xp` is numpy or jax.numpy (a training step computes them on the
    device)."""
    last = self.cumulative.shape[0] - 1
    window = self.window if window is None else window
    at = xp.clip(xp.floor((times - self.start) / self.bucket), 0, last).astype(xp.int32)
    since = xp.clip(xp.floor((times - window - self.start) / self.bucket), 0,
                    last).astype(xp.int32)
    return at, since

  def features(self, times, tables=None, xp=np):
    """Per item, log1p of (interactions in the window before t, every interaction before t,
    interactions in the last day before t, days since the item's first interaction before t):
    times [...] -> [..., V, NUM_FEATURES]. `tables` are (cumulative, first_seen) as the caller
    holds them (device arrays inside a jitted step)."""
    table, first_seen = (self.cumulative, self.first_seen) if tables is None else tables
    at, since = self.rows(times, xp)
    _, since_short = self.rows(times, xp, max(SHORT_WINDOW_SECONDS, self.bucket))
    total = table[at]
    known = total > 0  # first_seen is before t exactly where the item has counts before t
    age = xp.where(known, (times[..., None] - xp.where(known, first_seen, 0.0)) / DAY, 0.0)
    return xp.log1p(xp.stack([total - table[since], total, total - table[since_short],
                              xp.maximum(age, 0.0)], axis=-1))

  def device_tables(self, xp):
    """(cumulative, first_seen) as `features` reads them, on the device for xp=jax.numpy."""
    return xp.asarray(self.cumulative), xp.asarray(self.first_seen)
