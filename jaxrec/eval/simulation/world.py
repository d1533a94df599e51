"""The synthetic generator's world as an environment that policies can be run in, day by day.

The items (genres, latent vectors, popularity) and users (drifting tastes, home device, preferred
hour) are exactly those of `jaxrec/data/synthetic.py` with the same SyntheticConfig, so a model
trained on a dataset prepared from that config meets the users it learned about. User u of the
world is the dataset's raw user id u; item index r is the generator's popularity rank, whose raw
item id is `world.item_ids[r]`.

Each simulated day every active user is shown one slate of k items at their preferred hour and
answers slot by slot:
  examined  with the position bias 1 / log2(slot + 2)
  click     examined and rand < appeal x item fatigue x genre fatigue, where appeal is the
            generator's affinity sigmoid(5 <taste(t), item> - 2) and a "clickbait" item type (a
            fixed share of the catalogue) adds click appeal but gives little value
  watch     fraction of the item watched after a click: follows the affinity, low for clickbait
  like      more likely the more was watched; skip: examined and not clicked
  abandoned a click watched under `abandon_below`: regretted consumption
Item fatigue falls with the user's earlier impressions of the item (and more once watched), genre
fatigue with their recent clicks in the item's primary genre (today's earlier slots included),
both decaying day by day. A day's satisfaction is watch + like_weight x likes - regret_weight x
abandoned; a user's satisfaction memory (an exponential average over days, 0 on days away) moves
their probability of coming back the next day: users who do not return are inactive that day.

Everything is vectorised over users; randomness comes from `np.random.default_rng([seed, ...])`.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from jaxrec.data import synthetic as gen
from jaxrec.errors import UserError

_WORLD_STREAM = 1000  # seed stream of the world's own draws, apart from the generator's


@dataclasses.dataclass(frozen=True)
class WorldConfig:
  clickbait_fraction: float = 0.1  # share of items with high click appeal and little value
  clickbait_boost: float = 2.0     # added to a clickbait item's click logit
  item_fatigue: float = 0.7        # click odds x exp(-this x earlier impressions of the item)
  rewatch: float = 0.2             # click odds x this once the item was watched
  genre_fatigue: float = 0.35      # click odds x exp(-this x recent clicks in the item's genre)
  fatigue_decay: float = 0.7       # per day, for both fatigue memories
  abandon_below: float = 0.2       # a click watched less than this is regretted
  like_weight: float = 0.5
  regret_weight: float = 1.0
  memory_decay: float = 0.6        # satisfaction memory: m = decay m + (1 - decay) today
  base_return: float = 0.8         # typical probability of coming back at neutral satisfaction
  return_spread: float = 0.5       # sd of users' return logits around it
  satisfaction_ref: float = 0.6    # the neutral daily satisfaction
  return_weight: float = 1.5       # return logit per unit of satisfaction memory above neutral

  def validate(self):
    for name in ("clickbait_fraction", "fatigue_decay", "memory_decay", "base_return",
                 "abandon_below", "rewatch"):
      value = getattr(self, name)
      if not 0 <= value <= 1:
        raise UserError(f"WorldConfig.{name} must be in [0, 1], got {value!r}")
    if not 0 < self.base_return < 1:
      raise UserError(f"WorldConfig.base_return must be in (0, 1), got {self.base_return!r}")


@dataclasses.dataclass
class Responses:
  """Per-slot answers to slates [U, k]."""
  examined: np.ndarray
  click: np.ndarray
  watch: np.ndarray     # fraction watched, 0 without a click
  like: np.ndarray
  skip: np.ndarray
  abandoned: np.ndarray

  def satisfaction(self, config: WorldConfig) -> np.ndarray:
    """[U] the day's satisfaction of each user."""
    return (self.watch.sum(1) + config.like_weight * self.like.sum(1)
            - config.regret_weight * self.abandoned.sum(1))


@dataclasses.dataclass
class Requests:
  """Who asks for a slate today: world user indices, the time, device and hour of the visit."""
  users: np.ndarray
  now: np.ndarray        # unix seconds
  device: np.ndarray     # str, the user's home device
  hour: np.ndarray       # 0..23
  day: int


@dataclasses.dataclass
class WorldState:
  day: int                      # days simulated so far
  active: np.ndarray            # [U] bool: who visits on the next day
  memory: np.ndarray            # [U] satisfaction memory
  shown: list                   # per past day: ([U] users, [U, k] items)
  shown_weight: list            # per past day: impression weight (decays daily)
  watched: list                 # per past day: [U, k] bool clicked
  genre_load: np.ndarray        # [U, G] decayed recent clicks per genre
  clicks: list                  # per past day: (user, item, unix s) of each click


class World:
  """Users of a synthetic dataset as an environment. `users` takes the first N of the config's
  users (all when None)."""

  def __init__(self, synthetic: gen.SyntheticConfig, config: WorldConfig = WorldConfig(),
               users: int | None = None, seed: int = 0):
    synthetic.validate()
    config.validate()
    if users is not None and not (isinstance(users, (int, np.integer)) and
                                  1 <= users <= synthetic.num_users):
      raise UserError(f"users must be an integer in [1, {synthetic.num_users}] (the dataset's "
                      f"users), got {users!r}")
    self.synthetic, self.config, self.seed = synthetic, config, seed
    self.num_users = int(users or synthetic.num_users)
    items = gen._make_items(synthetic)
    profile, _ = gen._make_users(synthetic, items)
    base, target = [], []
    # Tastes are the first draw of each chunk's stream in the generator: the same users.
    for chunk, lo in enumerate(range(0, self.num_users, synthetic.chunk_users)):
      hi = min(lo + synthetic.chunk_users, synthetic.num_users)
      b, t = gen._tastes(gen._rng(synthetic, gen._CHUNK, chunk), synthetic, items.centroids,
                         profile["age"][lo:hi])
      base.append(b), target.append(t)
    n = self.num_users
    self.base = np.concatenate(base)[:n]
    self.target = np.concatenate(target)[:n]
    self.home_device = gen.DEVICES[profile["home"][:n]]
    self.hour = profile["hour"][:n]
    self.item_vec = items.vec
    self.item_ids = items.item_id                # rank -> raw item id
    self.rank_of_id = np.argsort(items.item_id)  # raw item id -> rank (ids are 0..n-1)
    genres = items.table.columns["genres"][items.item_id]  # side table rows are in id order
    primary = np.array([g.split("|")[0] for g in genres])
    self.item_genre = np.searchsorted(np.array([f"genre{i:02d}" for i in
                                                range(synthetic.num_genres)]), primary)
    rng = np.random.default_rng([seed, _WORLD_STREAM])
    self.clickbait = rng.random(synthetic.num_items) < config.clickbait_fraction
    base_logit = np.log(config.base_return / (1 - config.base_return))
    self.return_logit = base_logit + config.return_spread * rng.standard_normal(n)
    self.start_time = synthetic.start_time + synthetic.days * gen.DAY  # the log's end

  @property
  def num_items(self) -> int:
    return self.synthetic.num_items

  def reset(self) -> WorldState:
    """Day 0: everyone visits on the first day."""
    n = self.num_users
    return WorldState(0, np.ones(n, bool), np.full(n, self.config.satisfaction_ref), [], [], [],
                      np.zeros((n, self.synthetic.num_genres), np.float32), [])

  def requests(self, state: WorldState) -> Requests:
    users = np.flatnonzero(state.active)
    now = self.start_time + state.day * gen.DAY + self.hour[users] * 3600
    return Requests(users, now, self.home_device[users], self.hour[users], state.day)

  def taste(self, users: np.ndarray, now: np.ndarray) -> np.ndarray:
    """[U, D] tastes at unix time `now`: the generator's drift, continued past the log's end."""
    frac = ((now - self.synthetic.start_time) / (self.synthetic.days * gen.DAY))
    drift = (self.synthetic.drift * frac).astype(np.float32)[:, None]
    return self.base[users] + drift * (self.target[users] - self.base[users])

  def affinity(self, users: np.ndarray, now: np.ndarray, slates: np.ndarray) -> np.ndarray:
    """[U, k] the generator's click affinity of each slate item (no fatigue, no position)."""
    dots = np.einsum("ud,ukd->uk", self.taste(users, now), self.item_vec[slates])
    return 1 / (1 + np.exp(-(gen.SCALE * dots + gen.BIAS)))

  def _impressions(self, state, users, slates):
    """[U, k] decayed earlier impressions of each slate item, and whether it was watched."""
    count = np.zeros(slates.shape, np.float32)
    watched = np.zeros(slates.shape, bool)
    row_of = np.full(self.num_users, -1)
    row_of[users] = np.arange(len(users))
    for (day_users, day_items), weight, day_watched in zip(state.shown, state.shown_weight,
                                                           state.watched):
      rows = row_of[day_users]
      keep = rows >= 0
      if not keep.any():
        continue
      rows, past, past_watched = rows[keep], day_items[keep], day_watched[keep]
      match = slates[rows][:, :, None] == past[:, None, :]  # [u, k, k_past]
      count[rows] += weight * match.sum(2)
      watched[rows] |= (match & past_watched[:, None, :]).any(2)
    return count, watched

  def respond(self, state: WorldState, requests: Requests, slates: np.ndarray,
              rng: np.random.Generator) -> Responses:
    """Answers to `slates` [U, k] (item ranks) shown to `requests.users`; changes nothing."""
    slates = np.asarray(slates)
    u, k = slates.shape
    if u != len(requests.users):
      raise UserError(f"slates has {u} rows for {len(requests.users)} requests: one slate each.")
    if slates.size and (slates.min() < 0 or slates.max() >= self.num_items):
      raise UserError(f"slate items must be item indices in [0, {self.num_items}).")
    c = self.config
    affinity = self.affinity(requests.users, requests.now, slates)
    logit = np.log(affinity) - np.log1p(-affinity) + c.clickbait_boost * self.clickbait[slates]
    impressions, watched = self._impressions(state, requests.users, slates)
    odds_scale = np.exp(-c.item_fatigue * impressions) * np.where(watched, c.rewatch, 1.0)
    genre = self.item_genre[slates]
    load = state.genre_load[requests.users]
    position = 1 / np.log2(np.arange(k) + 2)
    out = {name: np.zeros((u, k), bool) for name in ("examined", "click", "like", "skip",
                                                     "abandoned")}
    watch = np.zeros((u, k), np.float32)
    rows = np.arange(u)
    for slot in range(k):
      g = genre[:, slot]
      fatigue = odds_scale[:, slot] * np.exp(-c.genre_fatigue * load[rows, g])
      p_click = fatigue / (1 + np.exp(-logit[:, slot]))
      examined = rng.random(u) < position[slot]
      click = examined & (rng.random(u) < p_click)
      value = np.where(self.clickbait[slates[:, slot]], 0.05 + 0.1 * affinity[:, slot],
                       0.1 + 0.8 * affinity[:, slot])
      w = np.clip(value + rng.normal(0, 0.15, u), 0.01, 1.0) * click
      out["examined"][:, slot] = examined
      out["click"][:, slot] = click
      watch[:, slot] = w
      out["like"][:, slot] = click & (rng.random(u) < 0.02 + 0.3 * w ** 2)
      out["skip"][:, slot] = examined & ~click
      out["abandoned"][:, slot] = click & (w < c.abandon_below)
      load[rows, g] += click  # today's earlier clicks tire the genre too
    return Responses(watch=watch, **out)

  def advance(self, state: WorldState, requests: Requests, slates: np.ndarray,
              responses: Responses, rng: np.random.Generator) -> dict:
    """Records a day's slates and responses, draws who comes back, returns the day's report."""
    c = self.config
    users = requests.users
    for i, weight in enumerate(state.shown_weight):
      state.shown_weight[i] = weight * c.fatigue_decay
    state.shown.append((users, np.asarray(slates)))
    state.shown_weight.append(1.0)
    state.watched.append(responses.click)
    state.genre_load *= c.fatigue_decay
    np.add.at(state.genre_load, (np.repeat(users, slates.shape[1]),
                                 self.item_genre[slates].ravel()), responses.click.ravel())
    satisfaction = np.zeros(self.num_users)
    satisfaction[users] = responses.satisfaction(c)
    state.memory = c.memory_decay * state.memory + (1 - c.memory_decay) * satisfaction
    r, s = np.nonzero(responses.click)
    state.clicks.append((users[r], slates[r, s], requests.now[r]))
    p_return = 1 / (1 + np.exp(-(self.return_logit + c.return_weight *
                                 (state.memory - c.satisfaction_ref))))
    state.active = rng.random(self.num_users) < p_return
    state.day += 1
    active = max(len(users), 1)
    return {
        "day": state.day,
        "active_users": int(len(users)),
        "retention": len(users) / self.num_users,
        "clicks_per_active": float(responses.click.sum() / active),
        "watch_per_active": float(responses.watch.sum() / active),
        "likes_per_active": float(responses.like.sum() / active),
        "abandoned_per_active": float(responses.abandoned.sum() / active),
        "satisfaction": float(satisfaction[users].mean()) if len(users) else 0.0,
    }

  def simulated_histories(self, state: WorldState, users: np.ndarray) -> list[list]:
    """Per user: (raw item id, unix s) of their clicks in the simulation so far, oldest first."""
    out = {int(u): [] for u in users}
    for day_users, items, times in state.clicks:
      for u, item, t in zip(day_users.tolist(), self.item_ids[items].tolist(), times.tolist()):
        if u in out:
          out[u].append((item, t))
    return [out[int(u)] for u in users]
