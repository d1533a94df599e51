"""Metrics of multi-task ranking heads on held-out impressions, computed on the host in numpy.

They run once over a whole split (up to a few million rows) after the model has produced its
predictions, so every function is vectorised and at most O(n log n): one sort, then bincounts.

Conventions:
  * `weights` are per row and default to 1; a row of weight 0 is dropped before anything else, so
    padded rows of a fixed-shape final batch may hold anything, NaN included. Integer weights act
    like duplicated rows.
  * AUC gives tied scores half credit (average ranks), which equals the Mann–Whitney U statistic
    and sklearn's `roc_auc_score`; it is NaN when the weighted rows hold only one class, because
    then no positive/negative pair exists to order.
  * NDCG breaks score ties pessimistically: within a tie the lower gains rank first, so a model
    that scores everything alike cannot look good (as `ranking.sampled_metrics` does). Gains are
    linear (DCG = sum gain / log2(rank + 2), ranks 0-based) and groups without any positive gain
    are left out of the mean, since their ideal DCG is 0.
  * Metrics that divide by something that is 0 return NaN instead of raising, so one empty head
    does not stop an evaluation. A NaN prediction on a kept row makes its metric NaN too, so a
    diverged model shows instead of hiding behind a sort order.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

NAN = float("nan")


def _rows(labels, values, weights=None, groups=None):
  """float64 1-D labels, values and weights (and groups as given) without the weight-0 rows."""
  labels = np.asarray(labels, np.float64).ravel()
  values = np.asarray(values, np.float64).ravel()
  weights = (np.ones_like(labels) if weights is None
             else np.asarray(weights, np.float64).ravel())
  if not labels.shape == values.shape == weights.shape:
    raise ValueError(f"labels, values and weights must have the same number of rows, got "
                     f"{labels.shape}, {values.shape} and {weights.shape}")
  if not np.all(np.isfinite(weights) & (weights >= 0)):
    raise ValueError("weights must be finite and >= 0 (use 0 to drop a row)")
  keep = weights > 0
  if groups is None:
    return labels[keep], values[keep], weights[keep]
  groups = np.asarray(groups).ravel()
  if groups.shape != labels.shape:
    raise ValueError(f"groups has {groups.shape[0]} rows, labels have {labels.shape[0]}")
  return labels[keep], values[keep], weights[keep], groups[keep]


def _check_unit(labels, what):
  if not np.all((labels >= 0) & (labels <= 1)):
    raise ValueError(f"{what} labels must lie in [0, 1]; binarise them first (e.g. label > 0)")


def auc(labels, scores, weights=None) -> float:
  """ROC AUC: the weighted share of (positive, negative) pairs the scores order correctly.

  Tied scores count half. A soft label y counts as a positive of weight w * y and a negative of
  weight w * (1 - y); for 0/1 labels this is exactly Mann–Whitney / sklearn. NaN when only one
  class has weight, or when a kept row's score is NaN.
  """
  labels, scores, weights = _rows(labels, scores, weights)
  _check_unit(labels, "AUC")
  pos, neg = weights * labels, weights * (1 - labels)
  num_pos, num_neg = pos.sum(), neg.sum()
  if num_pos <= 0 or num_neg <= 0 or np.isnan(scores).any():
    return NAN
  # One bin per distinct score: a positive beats the negatives in lower bins, ties with its own.
  _, bin_of = np.unique(scores, return_inverse=True)
  pos_per_bin, neg_per_bin = np.bincount(bin_of, pos), np.bincount(bin_of, neg)
  neg_below = np.cumsum(neg_per_bin) - neg_per_bin
  return float(np.sum(pos_per_bin * (neg_below + 0.5 * neg_per_bin)) / (num_pos * num_neg))


def logloss(labels, probabilities, weights=None, eps: float = 1e-7) -> float:
  """Weighted mean binary cross entropy; probabilities clipped to [eps, 1 - eps], labels in [0, 1].

  The clip keeps one confidently wrong row from making the mean infinite.
  """
  labels, probs, weights = _rows(labels, probabilities, weights)
  _check_unit(labels, "logloss")
  if weights.sum() <= 0:
    return NAN
  probs = np.clip(probs, eps, 1 - eps)
  loss = -(labels * np.log(probs) + (1 - labels) * np.log1p(-probs))
  return float(np.sum(weights * loss) / weights.sum())


def calibration(labels, probabilities, weights=None) -> float:
  """Weighted mean prediction / weighted mean label (1 is calibrated); NaN if the mean label is 0."""
  labels, preds, weights = _rows(labels, probabilities, weights)
  label_sum = np.sum(weights * labels)
  return float(np.sum(weights * preds) / label_sum) if label_sum != 0 else NAN


def rmse(labels, predictions, weights=None) -> float:
  """Weighted root mean squared error; NaN without weighted rows."""
  labels, preds, weights = _rows(labels, predictions, weights)
  if weights.sum() <= 0:
    return NAN
  return float(np.sqrt(np.sum(weights * (preds - labels) ** 2) / weights.sum()))


def per_group_ndcg(groups, gains, scores, k: int | None = None, weights=None):
  """(ndcg, group_weight) arrays over the groups with a positive gain, in sorted group-id order.

  A group's weight is the mean weight of its kept rows, so per-user weights carry over as given.
  """
  if k is not None and (int(k) != k or k < 1):
    raise ValueError(f"k must be a positive integer or None, got {k!r}")
  gains, scores, weights, groups = _rows(gains, scores, weights, groups)
  if not np.all(gains >= 0):
    raise ValueError("NDCG gains must be >= 0 (a NaN gain is neither); clip negative values first")
  # lexsort's last key is the primary: group, then score descending, then gain ascending (the
  # pessimistic tie break). The ideal order is group, then gain descending. Both orders list the
  # same groups with the same sizes, so rank and group index line up between them.
  order = np.lexsort((gains, -scores, groups))
  ideal = np.lexsort((-gains, groups))
  sorted_groups = groups[order]
  is_start = np.r_[True, sorted_groups[1:] != sorted_groups[:-1]]
  starts, group_of = np.flatnonzero(is_start), np.cumsum(is_start) - 1
  rank = np.arange(len(order)) - starts[group_of]
  discount = 1.0 / np.log2(rank + 2.0)
  if k is not None:
    discount[rank >= k] = 0.0
  num_groups = len(starts)
  dcg = np.bincount(group_of, gains[order] * discount, num_groups)
  idcg = np.bincount(group_of, gains[ideal] * discount, num_groups)
  group_weight = (np.bincount(group_of, weights[order], num_groups)
                  / np.bincount(group_of, minlength=num_groups))
  ndcg = np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)
  ndcg[np.bincount(group_of, np.isnan(scores[order]), num_groups) > 0] = NAN
  has_gain = idcg > 0
  return ndcg[has_gain], group_weight[has_gain]


def grouped_ndcg(groups, gains, scores, k: int | None = None, weights=None) -> float:
  """Mean NDCG@k of ranking each group's rows by `scores` against graded `gains` >= 0.

  Groups without a positive gain are left out; the mean is weighted by each group's mean row
  weight. Ties are broken pessimistically (see the module docstring). NaN when no group counts
  or a counted group has a NaN score.
  """
  return _mean(*per_group_ndcg(groups, gains, scores, k, weights))


def _mean(values, weights) -> float:
  total = weights.sum()
  return float(np.sum(values * weights) / total) if total > 0 else NAN


def head_metrics(head: str, labels, predictions, weights=None, kind: str = "binary"
                 ) -> dict[str, float]:
  """Metrics of one head, keyed `{head}/<metric>`.

  binary: `predictions` are probabilities (not logits); auc, logloss, calibration.
  regression: labels and predictions on the scale the head was trained on (e.g. both log1p of
  watch time); rmse, calibration, and auc of the prediction against label > 0, i.e. how well it
  puts watchers above non-watchers (a rank metric, so the same on any monotone scale).
  """
  if kind == "binary":
    return {f"{head}/auc": auc(labels, predictions, weights),
            f"{head}/logloss": logloss(labels, predictions, weights),
            f"{head}/calibration": calibration(labels, predictions, weights)}
  if kind == "regression":
    positive = np.asarray(labels).ravel() > 0
    return {f"{head}/rmse": rmse(labels, predictions, weights),
            f"{head}/auc": auc(positive, predictions, weights),
            f"{head}/calibration": calibration(labels, predictions, weights)}
  raise ValueError(f"head {head!r} has kind {kind!r}; use 'binary' or 'regression'")


class RankingAccumulator:
  """Collects a split's per-batch host arrays and computes every metric once, at the end.

  It keeps the batches and concatenates them in `result`: exact AUC and NDCG need all rows at
  once, and a few million rows per head fit in host memory easily.
  """

  def __init__(self):
    self._labels: dict[str, list[np.ndarray]] = {}
    self._predictions: dict[str, list[np.ndarray]] = {}
    self._weights: list[np.ndarray] = []
    self._groups: list[np.ndarray] | None = None

  def add(self, labels: Mapping, predictions: Mapping, weights=None, groups=None) -> None:
    """One batch: `{head: [B]}` labels and predictions, [B] weights (0 = padding), [B] group ids.

    Either every batch has group ids or none does; the head names must stay the same.
    """
    labels = {h: np.asarray(v).ravel() for h, v in labels.items()}
    predictions = {h: np.asarray(v).ravel() for h, v in predictions.items()}
    if self._weights and (set(labels) != set(self._labels)
                          or set(predictions) != set(self._predictions)):
      raise ValueError(f"heads changed between batches: labels {sorted(labels)}, predictions "
                       f"{sorted(predictions)} vs {sorted(self._labels)}, "
                       f"{sorted(self._predictions)}")
    if self._weights and (groups is None) != (self._groups is None):
      raise ValueError("pass group ids with every batch or with none")
    arrays = {**{f"label {h}": v for h, v in labels.items()},
              **{f"prediction {h}": v for h, v in predictions.items()}}
    if not arrays:
      raise ValueError("a batch needs at least one head's labels or predictions")
    size = next(iter(arrays.values())).shape[0]
    weights = np.ones(size, np.float32) if weights is None else np.asarray(weights).ravel()
    arrays.update(weights=weights)
    if groups is not None:
      arrays.update(groups=np.asarray(groups).ravel())
    wrong = {name: v.shape[0] for name, v in arrays.items() if v.shape[0] != size}
    if wrong:
      raise ValueError(f"every array of a batch needs {size} rows; these differ: {wrong}")
    for h, v in labels.items():
      self._labels.setdefault(h, []).append(v)
    for h, v in predictions.items():
      self._predictions.setdefault(h, []).append(v)
    self._weights.append(weights)
    if groups is not None:
      self._groups = self._groups if self._groups is not None else []
      self._groups.append(arrays["groups"])

  def result(self, heads: Mapping[str, str], ndcg_k: int | None = 10,
             combined: Mapping[str, float] | str | None = None) -> dict[str, float]:
    """`head_metrics` of each `{name: kind}` head, "num_rows" (total weight) and, with `combined`,
    `ndcg@{ndcg_k}` over the groups plus "ndcg_groups" (how many groups had a positive gain).

    `combined` gives the NDCG's per-row gain as sum(c_h * label_h) and its score as
    sum(c_h * prediction_h) over `{head: c_h}`; a head name alone means `{head: 1.0}`. Negative
    combined labels (a report weighted below zero outweighing a click) count as gain 0; their
    scores keep the sign, so ranking them high still costs.
    """
    if not self._weights:
      raise ValueError("no batches were added")
    labels = {h: np.concatenate(v) for h, v in self._labels.items()}
    predictions = {h: np.concatenate(v) for h, v in self._predictions.items()}
    weights = np.concatenate(self._weights)
    out = {}
    for head, kind in heads.items():
      if head not in labels or head not in predictions:
        raise ValueError(f"head {head!r} needs labels and predictions; labels have "
                         f"{sorted(labels)}, predictions {sorted(predictions)}")
      out.update(head_metrics(head, labels[head], predictions[head], weights, kind))
    out["num_rows"] = float(np.sum(weights, dtype=np.float64))
    if combined is None:
      return out
    if isinstance(combined, str):
      combined = {combined: 1.0}
    if self._groups is None:
      raise ValueError("NDCG needs group ids: pass groups= to add()")
    missing = [h for h in combined if h not in labels or h not in predictions]
    if not combined or missing:
      raise ValueError(f"combined needs heads with labels and predictions; missing {missing}")
    total = lambda arrays: sum(c * np.asarray(arrays[h], np.float64) for h, c in combined.items())
    ndcg, group_weight = per_group_ndcg(np.concatenate(self._groups),
                                        np.maximum(total(labels), 0.0), total(predictions),
                                        ndcg_k, weights)
    name = "ndcg" if ndcg_k is None else f"ndcg@{ndcg_k}"
    out[name] = _mean(ndcg, group_weight)
    out["ndcg_groups"] = float(len(ndcg))
    return out
