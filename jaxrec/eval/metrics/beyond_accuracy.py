"""Beyond-accuracy metrics of recommendation lists: coverage, exposure, diversity, novelty,
serendipity and calibration, computed on the host in numpy.

Lists are an int array `[U, k]` of item ids. Entries equal to `pad` (default 0, jaxrec's padding
id) or negative are not items, so lists of different lengths share one array; -1 also works as
padding. jaxrec ids 0 and 1 are padding and out-of-vocabulary, so catalogue items are
`first_id..num_items-1` (`first_id=2`).

Conventions:
  * Per-list metrics are averaged over the lists they are defined for (a list needs >= 1 item,
    ILD >= 2, entropy some genre weight); with no such list the result is NaN, not an error, so
    one empty slice of users does not stop an evaluation.
  * Genres: `item_genres` is `[V, G]` of genre ids per item, 0 = padding. An item with several
    genres splits its unit weight equally among them (a genre listed twice counts once), so a
    list's genre distribution is the normalised sum of its items' weights (Steck 2018).
  * Entropy and KL are in nats; novelty is in bits (self-information, -log2).
  * Each per-list metric X has `X_per_list(...) -> (values [U], defined [U])`, so a caller that
    sees its lists in batches (lists.py) can average them exactly without holding every
    list's intermediate arrays at once.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

NAN = float("nan")


def _valid(lists: np.ndarray, pad: int) -> np.ndarray:
  return (lists != pad) & (lists >= 0)


def _safe(lists: np.ndarray, valid: np.ndarray) -> np.ndarray:
  # Padding may be -1, which would silently index the last row; point it at row 0 and mask.
  return np.where(valid, lists, 0)


def _mean(values: np.ndarray, defined: np.ndarray) -> float:
  return float(values[defined].mean()) if defined.any() else NAN


def exposure_counts(lists, num_items: int, pad: int = 0, first_id: int = 2) -> np.ndarray:
  """[num_items - first_id] how often each catalogue item appears over all lists."""
  lists = np.asarray(lists)
  ids = lists[_valid(lists, pad)]
  ids = ids[(ids >= first_id) & (ids < num_items)]
  return np.bincount(ids - first_id, minlength=num_items - first_id)


def coverage(lists, num_items: int, pad: int = 0, first_id: int = 2) -> float:
  """Fraction of catalogue items shown in at least one list."""
  counts = exposure_counts(lists, num_items, pad, first_id)
  return float((counts > 0).mean()) if counts.size else NAN


def exposure_gini(lists, num_items: int, pad: int = 0, first_id: int = 2) -> float:
  """Gini coefficient of item exposure over the whole catalogue, never-shown items included:
  0 when every item is shown equally often, (n - 1) / n when one of n items takes all."""
  counts = np.sort(exposure_counts(lists, num_items, pad, first_id)).astype(np.float64)
  n, total = counts.size, counts.sum()
  if n == 0 or total == 0:
    return NAN
  rank = np.arange(1, n + 1)
  return float(((2 * rank - n - 1) * counts).sum() / (n * total))


def intra_list_diversity(lists, item_vectors, pad: int = 0) -> float:
  """Mean over lists of the mean pairwise cosine distance (1 - cos) of the list's items.

  A zero vector has cosine 0 with everything (distance 1) rather than NaN."""
  return _mean(*intra_list_diversity_per_list(lists, item_vectors, pad))


def intra_list_diversity_per_list(lists, item_vectors, pad: int = 0):
  lists = np.asarray(lists)
  valid = _valid(lists, pad)
  vectors = np.asarray(item_vectors, np.float64)
  norms = np.linalg.norm(vectors, axis=-1, keepdims=True)
  unit = vectors / np.maximum(norms, 1e-12)
  e = unit[_safe(lists, valid)] * valid[..., None]                       # [U, k, d]
  # Sum over pairs i < j of cos = (|sum e|^2 - sum |e|^2) / 2: O(k d) per list, not O(k^2 d).
  total = np.square(e.sum(1)).sum(-1)
  self_sim = np.square(e).sum((1, 2))
  m = valid.sum(1)
  pairs = m * (m - 1) / 2
  defined = m >= 2
  mean_sim = np.where(defined, (total - self_sim) / 2 / np.maximum(pairs, 1), 0.0)
  return 1.0 - mean_sim, defined


def genre_weights(item_genres) -> np.ndarray:
  """[V, max genre id + 1] each item's unit weight split equally over its genres (0 = padding)."""
  item_genres = np.asarray(item_genres)
  if item_genres.ndim == 1:
    item_genres = item_genres[:, None]
  num_genres = int(item_genres.max(initial=0)) + 1
  onehot = np.zeros((item_genres.shape[0], num_genres))
  rows = np.broadcast_to(np.arange(item_genres.shape[0])[:, None], item_genres.shape)
  onehot[rows, item_genres] = 1.0                                         # duplicates count once
  onehot[:, 0] = 0.0
  per_item = onehot.sum(1, keepdims=True)
  return onehot / np.maximum(per_item, 1.0)


def genre_distribution(lists, weights: np.ndarray, pad: int = 0):
  """([U, G] normalised genre distribution of each list, [U] bool whether it has any genre);
  `weights` from genre_weights."""
  lists = np.asarray(lists)
  valid = _valid(lists, pad)
  mass = (weights[_safe(lists, valid)] * valid[..., None]).sum(1)
  total = mass.sum(1, keepdims=True)
  return mass / np.where(total > 0, total, 1.0), total[:, 0] > 0


def _entropy(p: np.ndarray) -> np.ndarray:
  return -(p * np.log(np.where(p > 0, p, 1.0))).sum(-1)


def genre_entropy(lists, item_genres, pad: int = 0) -> float:
  """Mean over lists of the Shannon entropy (nats) of the list's genre distribution: 0 for a
  single genre, log 2 for two equally weighted genres."""
  return _mean(*genre_entropy_per_list(lists, item_genres, pad))


def genre_entropy_per_list(lists, item_genres, pad: int = 0):
  dist, defined = genre_distribution(lists, genre_weights(item_genres), pad)
  return _entropy(dist), defined


def novelty(lists, item_popularity, pad: int = 0) -> float:
  """Mean over lists of the mean self-information -log2 p(i) (bits) of the list's items.

  p(i) = (count_i + 1) / (total + V): add-one smoothing over the `[V]` counts array, so an item
  never seen in training is the most novel but finite."""
  return _mean(*novelty_per_list(lists, item_popularity, pad))


def novelty_per_list(lists, item_popularity, pad: int = 0):
  lists = np.asarray(lists)
  valid = _valid(lists, pad)
  counts = np.asarray(item_popularity, np.float64)
  bits = -np.log2((counts + 1.0) / (counts.sum() + counts.size))
  m = valid.sum(1)
  per_list = (bits[_safe(lists, valid)] * valid).sum(1) / np.maximum(m, 1)
  return per_list, m > 0


def _is_id_array(sets) -> bool:
  return isinstance(sets, np.ndarray) and sets.ndim == 2 and np.issubdtype(sets.dtype, np.integer)


def _as_mask(sets, num_users: int, num_ids: int) -> np.ndarray:
  """A bool [U, V] mask as given, or one built from a sequence of per-user id collections."""
  if isinstance(sets, np.ndarray) and sets.dtype == bool:
    return sets
  mask = np.zeros((num_users, num_ids), bool)
  for u, ids in enumerate(sets):
    ids = np.fromiter(ids, np.int64)
    mask[u, ids[(ids >= 0) & (ids < num_ids)]] = True
  return mask


def serendipity(lists, relevant, expected, pad: int = 0) -> float:
  """Mean over lists of the fraction of the list's items that are relevant (e.g. held-out
  positives) and not expected (e.g. the popularity top-k, or items like the history).

  `relevant` and `expected` are bool [U, V] masks, int [U, m] arrays of ids padded with `pad`
  or negatives (O(U k m), for catalogues too large for masks), or per-user sequences of item-id
  sets."""
  return _mean(*serendipity_per_list(lists, relevant, expected, pad))


def serendipity_per_list(lists, relevant, expected, pad: int = 0):
  lists = np.asarray(lists)
  valid = _valid(lists, pad)
  safe = _safe(lists, valid)
  num_ids = int(safe.max(initial=0)) + 1
  for sets in (relevant, expected):
    if isinstance(sets, np.ndarray) and sets.dtype == bool:
      num_ids = max(num_ids, sets.shape[1])
    elif not _is_id_array(sets):
      num_ids = max([num_ids] + [max(s, default=-1) + 1 for s in sets])
  rows = np.arange(len(lists))[:, None]

  def contains(sets):                                                   # [U, k] bool
    if _is_id_array(sets):
      return ((lists[:, :, None] == sets[:, None, :]) & _valid(sets, pad)[:, None, :]).any(-1)
    return _as_mask(sets, len(lists), num_ids)[rows, safe]

  hit = contains(relevant) & ~contains(expected) & valid
  m = valid.sum(1)
  return hit.sum(1) / np.maximum(m, 1), m > 0


def calibration_kl(lists, histories, item_genres, alpha: float = 0.01, pad: int = 0) -> float:
  """Steck (2018) miscalibration: mean over users of KL(p || q~) in nats, p the genre
  distribution of the user's history, q the list's, q~ = (1 - alpha) q + alpha p (which keeps the
  KL finite when the list lacks a genre of the history). Users whose history has no genre are
  left out; a list with no genres scores log(1 / alpha)."""
  return _mean(*calibration_kl_per_list(lists, histories, item_genres, alpha, pad))


def calibration_kl_per_list(lists, histories, item_genres, alpha: float = 0.01, pad: int = 0,
                            history_distribution=None):
  """`history_distribution`: genre_distribution(histories, ...) when already computed (then
  `histories` is not read), e.g. batch by batch for histories too long to keep."""
  weights = genre_weights(item_genres)
  p, has_history = history_distribution or genre_distribution(histories, weights, pad)
  q, _ = genre_distribution(lists, weights, pad)
  q_smooth = (1.0 - alpha) * q + alpha * p
  ratio = np.where(p > 0, p / np.where(q_smooth > 0, q_smooth, 1.0), 1.0)
  return (p * np.log(ratio)).sum(-1), has_history


def beyond_accuracy(lists, num_items: int | None = None, *, item_vectors=None, item_genres=None,
                    item_popularity=None, relevant=None, expected=None,
                    histories: Sequence | np.ndarray | None = None, alpha: float = 0.01,
                    pad: int = 0, first_id: int = 2) -> dict:
  """Every metric the given inputs allow. `num_items` defaults to the row count of whichever
  per-item array is given (they are all indexed by item id)."""
  lists = np.asarray(lists)
  if num_items is None:
    for table in (item_popularity, item_vectors, item_genres):
      if table is not None:
        num_items = len(table)
        break
  out = {}
  if num_items is not None:
    out["coverage"] = coverage(lists, num_items, pad, first_id)
    out["exposure_gini"] = exposure_gini(lists, num_items, pad, first_id)
  if item_vectors is not None:
    out["intra_list_diversity"] = intra_list_diversity(lists, item_vectors, pad)
  if item_genres is not None:
    out["genre_entropy"] = genre_entropy(lists, item_genres, pad)
    if histories is not None:
      out["calibration_kl"] = calibration_kl(lists, np.asarray(histories), item_genres, alpha, pad)
  if item_popularity is not None:
    out["novelty"] = novelty(lists, item_popularity, pad)
  if relevant is not None and expected is not None:
    out["serendipity"] = serendipity(lists, relevant, expected, pad)
  return out
