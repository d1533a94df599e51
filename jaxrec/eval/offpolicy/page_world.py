"""A small slate problem with a known answer, for checking the slate estimators (tests and
benchmarks/slate_ope.py).

A page of L rows, row j showing one item from its own pool of M items (item id j * M + index),
each row chosen independently by the logger: the product logger that the pseudo-inverse
estimator needs. The target mixes two product policies half and half, so its rows are
correlated; only its per-row marginals enter position IPS and PI, while whole-slate IPS needs its
probability of the whole page. Row j is clicked with probability phi_j(x, item). With
`spillover`, row 0's click probability is halved and rises by 0.3 when row 1 shows the item the
target likes most there: the page total stays additive over rows, row 0's reward does not
depend on row 0 alone.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.eval.offpolicy.slate_estimators import SlateLog


@dataclasses.dataclass(frozen=True)
class PageWorld:
  logger: np.ndarray       # [C, L, M] per-row probabilities, at least 0.2 / M each
  target_a: np.ndarray     # [C, L, M] the two product policies the target mixes
  target_b: np.ndarray
  click: np.ndarray        # [C, L, M] phi
  spill: np.ndarray        # [C, M] 1 for the target's favourite row-1 item

  @classmethod
  def make(cls, seed: int = 7, contexts: int = 5, rows: int = 3, pool: int = 4) -> PageWorld:
    rng = np.random.default_rng(seed)
    logger = rng.dirichlet(np.full(pool, 2.0), (contexts, rows)) * 0.8 + 0.2 / pool
    a, b = rng.dirichlet(np.full(pool, 0.5), (2, contexts, rows))
    click = rng.uniform(0.05, 0.6, (contexts, rows, pool))
    spill = np.argsort(-(a + b)[:, 1], axis=1).argsort(axis=1) == 0
    return cls(logger, a, b, click, spill.astype(float))

  @property
  def target(self) -> np.ndarray:
    """[C, L, M] the target's per-row marginals."""
    return 0.5 * (self.target_a + self.target_b)

  def truth(self, spillover: bool) -> float:
    """The target's expected page reward, contexts uniform: linear in its marginals."""
    phi = self.click.copy()
    if spillover:
      phi[:, 0] *= 0.5
    value = (self.target * phi).sum((1, 2)).mean()
    if spillover:
      value += 0.3 * (self.target[:, 1] * self.spill).sum(1).mean()
    return float(value)

  def sample(self, n: int, seed: int, spillover: bool):
    """(SlateLog of n logged pages, target marginals [n, L] of the logged items, the target's
    and the logger's probabilities [n] of each whole logged page)."""
    contexts, rows, pool = self.logger.shape
    rng = np.random.default_rng(seed)
    x = rng.integers(0, contexts, n)
    index = (rng.random((n, rows, 1)) > self.logger[x].cumsum(-1)).sum(-1)      # [n, L]
    index = np.minimum(index, pool - 1)                 # cumsum can round just below 1
    slots = np.arange(rows)
    at = (x[:, None], slots, index)
    p_click = self.click[at]
    if spillover:
      p_click[:, 0] = 0.5 * p_click[:, 0] + 0.3 * self.spill[x, index[:, 1]]
    reward = (rng.random((n, rows)) < p_click).astype(float)
    log = SlateLog(context=x, slate=slots * pool + index, reward=reward,
                   propensity=self.logger[at])
    page_target = 0.5 * (self.target_a[at].prod(1) + self.target_b[at].prod(1))
    return log, self.target[at], page_target, self.logger[at].prod(1)
