"""Maximal Marginal Relevance: pick items greedily by

    lam * relevance(i) - (1 - lam) * max_{j picked} cos(v_i, v_j)

so each pick trades relevance against similarity to what is already in the list.

Relevance is the score min-max normalised to [0, 1] over the allowed candidates. Cosine
similarity lies in [-1, 1] whatever the ranker's score scale is, so without this a lam tuned for
one ranker (scores in [0, 1]) would mean something else for another (logits in [-20, 20]).
lam = 1 is pure relevance order; lam = 0 takes the most relevant item first and then only
diversity counts. Vectors are L2-normalised here; an all-zero vector is similar to nothing.

The loop runs over the k picks; each pick is O(N D) numpy work (one matrix-vector product).
"""

from __future__ import annotations

import numpy as np

from jaxrec.errors import UserError
from jaxrec.rerank import checks
from jaxrec.rerank.rules import GroupCaps


def mmr(scores, vectors, k: int, lam: float, mask=None) -> np.ndarray:
  """Indices [<= k] of the candidates MMR picks, in pick order; fewer than k when fewer are
  allowed by `mask` ([N] bool)."""
  return mmr_select(scores, vectors, k, lam, mask)[0]


def mmr_select(scores, vectors, k: int, lam: float, mask=None,
               caps: GroupCaps | None = None) -> tuple[np.ndarray, np.ndarray]:
  """MMR as `mmr`, honouring group caps as it picks (each pick is `caps.take`n).

  Returns (indices [m], reordered [m] bool): reordered is True where the pick was not the
  highest-scored candidate still available, i.e. diversity rather than the score chose it.
  """
  scores = checks.finite("scores", checks.vector("scores", scores, dtype=np.float32))
  n = len(scores)
  vectors = np.asarray(vectors, np.float32)
  if vectors.ndim != 2 or len(vectors) != n:
    raise UserError(f"vectors has shape {vectors.shape}, expected [{n}, D]: one embedding per "
                    "candidate, in the order of scores.")
  k = checks.count("k", k, 1)
  if not 0.0 <= lam <= 1.0:
    raise UserError(f"lam must be between 0 and 1, got {lam}; 1 ranks by score alone.")
  available = checks.mask(mask, n)
  if caps is not None:
    available &= caps.room

  # The highest-scored available candidate is found by walking this order: availability only
  # ever goes from True to False, so one pointer serves all k picks.
  by_score = np.argsort(-scores, kind="stable")
  top = 0
  diverse = lam < 1.0
  if diverse:
    # Per pick: sim = (1 - lam) * cos(., pick) as one matrix-vector product with rows
    # pre-scaled by (1 - lam) / norm, penalty = running max of sim, and gain = base - penalty,
    # where base is lam * relevance, -inf once a candidate is unavailable.
    scaled = _unit_rows(vectors, 1.0 - lam)
    sim = np.empty(n, np.float32)
    # -inf, not 0: the max over picks of a cosine can be negative, and must count as such.
    penalty = np.full(n, -np.inf, np.float32)
    base = np.where(available, lam * _minmax(scores, available), -np.inf).astype(np.float32)
    gain = np.empty(n, np.float32)
  picked, tops = [], []
  for step in range(min(k, n)):
    if not available[by_score[top]]:
      ahead = available[by_score[top:]]
      if not ahead.any():
        break
      top += int(ahead.argmax())
    if not diverse or step == 0:  # the first pick has no similarity to weigh: most relevant
      pick = int(by_score[top])
    else:
      np.subtract(base, penalty, out=gain)
      pick = int(np.argmax(gain))
    picked.append(pick)
    tops.append(by_score[top])
    available[pick] = False
    closed = caps is not None and caps.take(pick)
    if closed:
      available &= caps.room
    if diverse:
      base[pick] = -np.inf
      if closed:
        base[~caps.room] = -np.inf
      np.dot(scaled, scaled[pick] / (1.0 - lam), out=sim)
      np.maximum(penalty, sim, out=penalty)
  picked = np.asarray(picked, np.int64)
  return picked, scores[picked] < scores[np.asarray(tops, np.int64)]


def _minmax(scores: np.ndarray, over: np.ndarray) -> np.ndarray:
  """Scores mapped to [0, 1] by the min and max of the candidates in `over`."""
  if not over.any():
    return np.zeros_like(scores)
  low, high = scores[over].min(), scores[over].max()
  if high == low:  # all equal: relevance cannot separate them, diversity alone decides
    return np.zeros_like(scores)
  return (scores - low) / (high - low)


def _unit_rows(vectors: np.ndarray, scale: float) -> np.ndarray:
  """Rows scaled to length `scale`; all-zero rows stay zero."""
  norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))  # half np.linalg.norm's time
  return vectors * (scale / np.maximum(norms, np.finfo(np.float32).tiny))[:, None]
