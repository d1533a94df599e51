"""Fits a baseline and ranks with it through the trained models' evaluation batches and metrics.

`jaxrec train --config configs/movielens_itemknn.py --workdir DIR` runs `fit_baseline` for a
config whose task is "baseline", and writes results.json in the trainer's shape, so a baseline's
numbers and a model's are read, and compared, the same way.
"""

from __future__ import annotations

import inspect
import json
import os
import time
from collections.abc import Sequence

import jax
import numpy as np

from jaxrec.baselines.als import ALS
from jaxrec.baselines.neighbors import ItemKNN, UserKNN
from jaxrec.baselines.popularity import DecayedPopularity, RecentPopularity
from jaxrec.config import save_config
from jaxrec.data import pipelines
from jaxrec.errors import UserError
from jaxrec.eval import protocols
from jaxrec.eval.metrics import ranking
from jaxrec.eval.metrics.lists import ListCollector, list_report


class Popularity:
  """Most popular training items first, whoever the user: the scores of
  jaxrec/eval/metrics/popularity.py (log1p of the training counts: the same order, so the same
  numbers)."""

  def fit(self, ds) -> Popularity:
    self.counts = np.log1p(ds.item_counts.astype(np.float32))
    return self

  def scores(self, users: np.ndarray, seen: np.ndarray) -> np.ndarray:
    return np.broadcast_to(self.counts, (len(users), len(self.counts)))


MODELS = {"popularity": Popularity, "recent_popularity": RecentPopularity,
          "decayed_popularity": DecayedPopularity, "itemknn": ItemKNN, "userknn": UserKNN,
          "als": ALS}


def evaluate_scorer(ds, scorer, split: str, batch_size: int = 256,
                    ks: Sequence[int] = (10, 20, 100), max_targets: int = 1, lists=None,
                    exclude_seen: bool = True) -> dict:
  """Mean per-user metrics of `scorer.scores(users, seen)` on a split: full ranking over all
  items, each user's earlier items excluded (`exclude_seen` False: nothing excluded), exactly as
  the trainer evaluates a model; max_targets 0 scores every interaction of the window; on a
  temporal split users with and without history are reported apart too. A scorer whose scores
  depend on the split (the request time) has `for_split(split)`, returning the split's scorer.
  `lists` (eval/list_metrics.ListCollector) gathers each user's top list, as Run.evaluate does."""
  ks = tuple(ks)
  if hasattr(scorer, "for_split"):
    scorer = scorer.for_split(split)

  @jax.jit
  def step(scores, seen, targets, inputs):
    out = ranking.topk_metrics(ranking.mask_scores(scores, seen if exclude_seen else None),
                               targets, ks, list_k=ranking.LIST_K)
    out[ranking.HAS_HISTORY] = ranking.has_history(inputs)
    return out

  accumulator = ranking.MetricAccumulator(by_history=protocols.by_history(ds))
  # max_len=1: the baselines read the whole history from `seen`, not the recent window.
  for batch in pipelines.sequence_dataset(
      ds, split, max_len=1, max_targets=max_targets, with_seen=True,
      options=pipelines.PipelineOptions(batch_size=batch_size)):
    scores = scorer.scores(batch["user"], batch["seen"])
    out = jax.device_get(step(scores, batch["seen"], batch["targets"], batch["inputs"]))
    top_items = out.pop(ranking.TOP_ITEMS)
    if lists is not None:
      lists.add(top_items, batch, batch["weight"])
    accumulator.add(out, batch["weight"])
  return accumulator.result()


def protocol(ds, split: str, eval_config=None) -> dict:
  """The trained tasks' protocol description (SequentialTask.protocol), for the same report;
  `eval_config` is config.eval (None: the defaults)."""
  return protocols.ranking_protocol(ds, split, {} if eval_config is None else eval_config)


def build_baseline(config):
  """The model named by config.model.name, with the rest of config.model as its arguments."""
  kwargs = dict(config.model)
  name = kwargs.pop("name")
  if name not in MODELS:
    raise UserError(f"unknown model.name {name!r} for task 'baseline': use one of "
                    f"{', '.join(MODELS)}.")
  cls = MODELS[name]
  parameters = inspect.signature(cls).parameters
  if "seed" in parameters:
    kwargs.setdefault("seed", config.seed)
  unknown = sorted(set(kwargs) - set(parameters))
  if unknown:
    raise UserError(f"model.{unknown[0]} is not a setting of {name}; its settings are: "
                    f"{', '.join(parameters) or 'none'}.")
  return cls(**kwargs)


def fitted_baseline(config):
  """(the configured baseline fitted on the training split, its dataset, seconds to fit)."""
  from jaxrec.data.prepare import open_or_prepare
  if config.eval.get("sampled_negatives"):
    raise UserError("the sampled protocol is not available for baselines; set "
                    "eval.sampled_negatives=0 (full ranking is the protocol that counts).")
  model = build_baseline(config)
  ds = open_or_prepare(config.data)
  started = time.time()
  model.fit(ds)
  if hasattr(model, "select"):  # a setting chosen on validation, under the test's protocol
    model.select(lambda: evaluate_baseline(config, "valid", model, ds))
  return model, ds, time.time() - started


def evaluate_baseline(config, split: str, model=None, ds=None, lists=None) -> dict:
  """A baseline's metrics on a split (fitted first unless `model` and `ds` are given)."""
  if model is None:
    model, ds, _ = fitted_baseline(config)
  return evaluate_scorer(ds, model, split, config.eval.batch_size, config.eval.ks,
                         config.eval.max_targets, lists, protocols.exclude_seen(config.eval))


def baseline_report(model) -> dict:
  """What a baseline chose on validation (its `report()`), for results.json; {} for the rest."""
  return model.report() if hasattr(model, "report") else {}


def baseline_list_report(lists: ListCollector, model) -> dict:
  """list_report of a baseline's lists; ALS's item factors are its item vectors."""
  return list_report(lists, getattr(model, "item_factors", None))


def fit_baseline(config, workdir: str) -> dict:
  """Fits the configured baseline on the training split, evaluates validation and test, and
  writes config.json and results.json to `workdir`. Returns the results."""
  os.makedirs(workdir, exist_ok=True)
  save_config(config, os.path.join(workdir, "config.json"))
  model, ds, fit_seconds = fitted_baseline(config)
  lists = ListCollector(ds)
  results = {"best_step": 0, "last_step": 0, "skipped_steps": 0, "model": config.model.name,
             "fit_seconds": round(fit_seconds, 3),
             "valid": evaluate_baseline(config, "valid", model, ds),
             "test": evaluate_baseline(config, "test", model, ds, lists),
             **protocol(ds, "test", config.eval), **baseline_report(model),
             "beyond_accuracy": baseline_list_report(lists, model)}
  with open(os.path.join(workdir, "results.json"), "w") as f:
    json.dump(results, f, indent=2)
  return results
