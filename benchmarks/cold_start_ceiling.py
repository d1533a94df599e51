"""How much can metadata say about which new item a user picks? The synthetic world's ceiling.

    python benchmarks/cold_start_ceiling.py

The same world and split as benchmarks/cold_start.py (synthetic: 20k users, 10k items, 1M events,
20% of items released during the log; global temporal split 0.8/0.9), the same users (test users
whose held-out item had no training interactions) and the same Recall@50, full ranking and among
the new items only. Instead of a trained model, scorers that read the generator's own hidden
state (jaxrec/data/synthetic.py), from everything it knows down to what metadata can know:

- oracle: the item's popularity weight (its Zipf rank) × exp(3 · taste · item vector), for items
  released by the event time: about the generator's own choice of impression (it weighs 4
  popularity-drawn candidates by exp(3 · affinity));
- taste · item vector: the user's true drifting taste and the item's true latent vector, released
  items only, without the popularity weight (which no metadata reveals: an item's Zipf rank is
  drawn independently of its genres, title and release);
- taste · genre vector: the item's vector rebuilt from its genres alone (the mean of its genres'
  centroids), as a perfect metadata model with the user's true taste would have it;
- released only: items already released at the event time, in random order;
- random.
Equal scores (items of the same genres, say) are ordered at random: a hit counts its probability.
The last three bound what any model reading metadata (and a history that only reveals the taste)
can reach here. Writes benchmarks/results/cold_start_ceiling.json.
"""

from __future__ import annotations

import os
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, write_result  # noqa: E402
from cold_start import DATASETS  # noqa: E402

from jaxrec.data import synthetic as world  # noqa: E402
from jaxrec.data.pipelines import _split_range  # noqa: E402
from jaxrec.data.prepare import PrepareOptions, prepare  # noqa: E402
from jaxrec.eval.metrics.cold_start import cold_items  # noqa: E402

K = 50


def hidden_state(config: world.SyntheticConfig, ds):
  """Per prepared item id: latent vector, release time, popularity weight, genre-rebuilt vector;
  per prepared user id: base and drift-target tastes (the generator's one chunk of users)."""
  if config.num_users > config.chunk_users:
    raise ValueError("the ceiling reads one chunk of users; raise chunk_users")
  items = world._make_items(config)
  profile, _ = world._make_users(config, items)
  base, target = world._tastes(world._rng(config, world._CHUNK, 0), config, items.centroids,
                               profile["age"])
  raw_items = np.concatenate([[0, 0], ds.vocabs["item"].raw_ids.astype(np.int64)])
  rank = np.argsort(items.item_id)[raw_items]  # prepared id -> popularity rank (rows 0, 1 unused)
  x = np.arange(1, config.num_items + 2, dtype=np.float64)
  s = config.zipf_exponent
  weight = np.diff(np.log(x) if abs(1 - s) < 1e-6 else x ** (1 - s) / (1 - s))
  genre_names = [None, None] + list(ds.vocabs["item_genres"].raw_ids)
  centroid = np.zeros((len(genre_names), config.dim), np.float32)
  for gid, name in enumerate(genre_names):
    if name is not None:
      centroid[gid] = items.centroids[int(str(name)[len("genre"):])]
  genres = ds.item_features["genres"]
  rebuilt = world._unit(centroid[genres].sum(1) + 1e-9)
  raw_users = np.concatenate([[0, 0], ds.vocabs["user"].raw_ids.astype(np.int64)])
  return (items.vec[rank], items.release[rank], weight[rank], rebuilt, base[raw_users],
          target[raw_users])


def expected_hit(scores: np.ndarray, item: int) -> float:
  """P(item in the top K) when equal scores are ordered at random (items sharing genres tie)."""
  above = int((scores > scores[item]).sum())
  tied = int((scores == scores[item]).sum())  # the item itself included
  return float(np.clip((K - above) / tied, 0.0, 1.0))


def main() -> None:
  _, generator, _ = DATASETS["synthetic"]
  config = world.SyntheticConfig(**generator)
  with tempfile.TemporaryDirectory() as tmp:
    ds = prepare(world.generate(config), os.path.join(tmp, "synthetic"),
                 PrepareOptions(split="temporal", split_times=(0.8, 0.9)))
    vec, release, weight, rebuilt, base, target = hidden_state(config, ds)
    cold = cold_items(ds) > 0
    lo, hi = _split_range(ds, "test")
    users = np.flatnonzero(hi > lo)
    tokens = ds.user_tokens(users + 2)
    held_out = np.array([t["item"][lo[u]] for u, t in zip(users, tokens)])
    when = np.array([t["timestamp"][lo[u]] for u, t in zip(users, tokens)])
    history = [t["item"][:lo[u]] for u, t in zip(users, tokens)]
  rows = np.flatnonzero(cold[held_out])
  scorers = {
      "oracle (popularity weight x taste)": lambda taste, released: weight * np.exp(3 * vec @ taste) * released,
      "taste . item vector (no popularity)": lambda taste, released: np.exp(3 * vec @ taste) * released,
      "taste . genre vector (perfect metadata)": lambda taste, released: np.exp(3 * rebuilt @ taste) * released,
      "released only": lambda taste, released: released,
      "random": lambda taste, released: np.zeros(len(vec)),
  }
  results, table = {}, []
  for name, score in scorers.items():
    hits = {"full_ranking": 0.0, "among_new_items": 0.0}
    for row in rows:
      user = users[row] + 2
      frac = (when[row] - config.start_time) / (config.days * world.DAY)
      taste = base[user] + config.drift * frac * (target[user] - base[user])
      scores = score(taste, (release <= when[row]).astype(np.float64)).astype(np.float64)
      scores[:2] = -np.inf
      scores[history[row]] = -np.inf
      for where in hits:
        ranked = scores if where == "full_ranking" else np.where(cold, scores, -np.inf)
        hits[where] += expected_hit(ranked, held_out[row])
    results[name] = {where: count / len(rows) for where, count in hits.items()}
    table.append([name, f"{results[name]['full_ranking']:.4f}",
                  f"{results[name]['among_new_items']:.4f}"])
  print(f"\n{len(rows)} test users whose held-out item is one of {int(cold.sum())} new items; "
        f"Recall@{K}\n")
  print_table(["scorer", "full ranking", "among new items"], table)
  path = write_result("cold_start_ceiling", {
      "k": K, "users": len(rows), "new_items": int(cold.sum()), "world": generator,
      "recall": results, "protocol": __doc__.split("\n\n", 2)[2].split("\n\nThe last")[0]})
  print(f"\nwrote {path}")


if __name__ == "__main__":
  main()
