"""Human-readable views of a prepared dataset: its statistics and a few tokenized histories."""

from __future__ import annotations

import datetime

import numpy as np

from jaxrec.data.events import EventType
from jaxrec.data.storage import PreparedDataset
from jaxrec.data.vocab import FIRST_ID


def format_stats(ds: PreparedDataset) -> str:
  s = ds.stats
  lines = [f"dataset        {ds.manifest['dataset']}  ({ds.path})",
           f"users          {s['users']}",
           f"items          {s['items']}  ({s['items_without_interactions']} without interactions)",
           f"interactions   {s['interactions']}",
           f"tokens         {s['tokens']}  (events merged: {ds.manifest['options']['merge_gap']} s gap)",
           f"density        {s['density']:.4%}",
           f"tokens/user    mean {s['tokens_per_user']['mean']:.1f}, median "
           f"{s['tokens_per_user']['median']:.0f}, max {s['tokens_per_user']['max']}",
           f"time range     {s['time_range'][0]} .. {s['time_range'][1]}",
           f"split          {ds.manifest['split']['kind']}: " + ", ".join(
               f"{k} {v} tokens" for k, v in s["split_tokens"].items()),
           "events         " + ", ".join(f"{k} {v}" for k, v in s["events_by_type"].items()),
           f"item features  {', '.join(s['item_features'])}",
           f"user features  {', '.join(s['user_features']) or '-'}"]
  lines += [f"note           {note}" for note in ds.manifest.get("notes", [])]
  return "\n".join(lines)


def _item_label(ds: PreparedDataset, item: int) -> str:
  raw = ds.vocabs["item"].raw(np.array([item]))[0]
  titles = ds.item_features.get("title")
  return str(raw) if titles is None else f"{raw} {titles[item][:30]}"


def format_history(ds: PreparedDataset, user: int, max_tokens: int = 10) -> str:
  tokens = ds.user_tokens([user])[0]
  raw_user = ds.vocabs["user"].raw(np.array([user]))[0]
  split = ds.splits
  train_end = split.train_end[user - FIRST_ID]
  valid_end = split.valid_end[user - FIRST_ID]
  lines = [f"user {raw_user} (id {user}): {len(tokens)} tokens, last {min(max_tokens, len(tokens))}:"]
  for position in range(max(0, len(tokens) - max_tokens), len(tokens)):
    t = tokens[position]
    part = "train" if position < train_end else "valid" if position < valid_end else "test"
    when = datetime.datetime.fromtimestamp(int(t["timestamp"]), datetime.timezone.utc)
    lines.append(
        f"  {when:%Y-%m-%d %H:%M} {part:5} item {int(t['item']):5} {_item_label(ds, int(t['item'])):40}"
        f" {EventType(int(t['event'])).name.lower():11} x{int(t['count'])} value {float(t['value']):.2f}"
        f" gap-bucket {int(t['gap'])}")
  return "\n".join(lines)
