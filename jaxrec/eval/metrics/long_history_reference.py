"""What W tokens of history can tell in the synthetic-long world: a scorer that knows its rules.

Not a model to deploy. It reads the world's structure straight from the item ids (topic, style and
popularity rank, jaxrec/data/synthetic_sessions.py) and its settings, and scores the next item
from the last `window` tokens alone:

- topic: the session goes on (probability 1 - 1/mean_session_length) in the last token's topic,
  or a new session picks a topic as often as the window shows it (add-one-tenth smoothing, so a
  topic the window never shows keeps a little mass);
- favourite style of each topic: a posterior over its styles, each play in the window counting
  as a draw that favours the favourite `style_bonus` times (draws without replacement ignored);
- item: Zipf popularity within its style x the expected style bonus, over the topic's items the
  user has not watched (watched items are excluded, as every model's evaluation does).

Its NDCG at 200 and at 2,048 tokens measures what reading further back is worth in this world to
a scorer that knows its rules (an approximation of the best one, not a strict bound):
benchmarks/foundation_long_context.py prints it beside the models. With `infer_style=False` it
ignores favourite styles (topic and popularity alone): what is left when no style is learned.
"""

from __future__ import annotations

import numpy as np

from jaxrec.data.storage import PreparedDataset
from jaxrec.data.synthetic_sessions import LongHistoryConfig
from jaxrec.data.vocab import FIRST_ID
from jaxrec.eval.metrics.ranking import KS, NEG, topk_metrics

TOPIC_SMOOTHING = 0.1


class LongHistoryReference:
  """Scores raw item ids of a synthetic-long world made with `config`."""

  def __init__(self, config: LongHistoryConfig, infer_style: bool = True):
    self.config = config
    s, m = config.styles_per_topic, config.items_per_style
    ids = np.arange(config.num_items)
    self.topic, self.style = ids // (s * m), (ids // m) % s
    popularity = 1.0 / np.arange(1, m + 1) ** config.zipf_exponent
    self.popularity = popularity[ids % m]
    # Without style inference every style of a topic looks alike, whatever the window shows.
    self.log_bonus = np.log(config.style_bonus) if infer_style else 0.0

  def scores(self, history: np.ndarray, window: int | None) -> np.ndarray:
    """Scores of every raw item id after `history` (raw ids, oldest first), reading its last
    `window` tokens (None: all); watched items score -inf."""
    c = self.config
    seen = history[-window:] if window else history
    topics, styles = self.topic[seen], self.style[seen]
    continues = 1.0 - 1.0 / c.mean_session_length
    topic_counts = np.bincount(topics, minlength=c.num_topics) + TOPIC_SMOOTHING
    p_topic = (1.0 - continues) * topic_counts / topic_counts.sum()
    p_topic[self.topic[history[-1]]] += continues

    style_counts = np.zeros((c.num_topics, c.styles_per_topic))
    np.add.at(style_counts, (topics, styles), 1.0)
    logits = style_counts * self.log_bonus
    p_favourite = np.exp(logits - logits.max(axis=1, keepdims=True))
    p_favourite /= p_favourite.sum(axis=1, keepdims=True)

    weight = self.popularity * (1.0 + (c.style_bonus - 1.0) * p_favourite[self.topic, self.style])
    weight[history] = 0.0
    per_topic = np.bincount(self.topic, weights=weight, minlength=c.num_topics)
    out = p_topic[self.topic] * weight / np.maximum(per_topic[self.topic], 1e-30)
    out[history] = -np.inf
    return out


def reference_metrics(dataset: PreparedDataset, config: LongHistoryConfig, window: int | None,
                      split: str = "test", ks=KS, batch: int = 256,
                      infer_style: bool = True) -> dict[str, float]:
  """Mean ranking metrics of the reference on `split`'s held-out token of every user (the
  trainer's leave-one-out protocol: full ranking, watched items excluded), with the standard
  error of the mean NDCG@10 (what a comparison over these users can resolve)."""
  if split not in ("valid", "test"):
    raise ValueError(f"split must be 'valid' or 'test', got {split!r}")
  reference = LongHistoryReference(config, infer_style)
  vocab, splits = dataset.vocabs["item"], dataset.splits
  target_at = splits.train_end if split == "valid" else splits.valid_end
  users = np.flatnonzero(splits.length > target_at) + FIRST_ID
  per_user = []
  for lo in range(0, len(users), batch):
    scores, targets = [], []
    for user, seq in zip(users[lo:lo + batch], dataset.user_tokens(users[lo:lo + batch])):
      at = int(target_at[user - FIRST_ID])
      by_id = np.full(len(vocab), NEG, np.float32)  # padding and OOV columns stay masked
      by_id[FIRST_ID:] = np.maximum(
          reference.scores(vocab.raw(seq["item"][:at].astype(np.int64)), window)[vocab.raw_ids],
          NEG)
      scores.append(by_id)
      targets.append(seq["item"][at])
    per_user.append({k: np.asarray(v) for k, v in topk_metrics(
        np.stack(scores), np.array(targets)[:, None], ks).items()})
  per_user = {k: np.concatenate([part[k] for part in per_user]) for k in per_user[0]}
  out = {name: float(np.mean(values)) for name, values in per_user.items()}
  out["ndcg@10_stderr"] = float(np.std(per_user["ndcg@10"]) / np.sqrt(len(users)))
  out["num_users"] = int(len(users))
  return out
