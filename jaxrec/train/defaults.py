"""Default settings shared by the experiment configs in configs/; each config changes a few."""

from __future__ import annotations

import ml_collections

from jaxrec.data.tokenize import MERGE_GAP
from jaxrec.parallel.partitioner import DEFAULT_AXES, DEFAULT_RULES


def sequential_config() -> ml_collections.ConfigDict:
  c = ml_collections.ConfigDict()
  c.task = "sequential"
  c.seed = 0

  c.data = ml_collections.ConfigDict()
  c.data.dataset = "movielens-100k"
  c.data.dir = "data/movielens-100k"  # prepared here on first use
  c.data.data_dir = ""  # download cache; "" = $JAXREC_DATA_DIR or ~/.cache/jaxrec
  c.data.path = ""  # csv/parquet datasets: your events file
  c.data.columns = ""  # csv/parquet: "user=uid,item=movie,timestamp=ts,event=action"
  c.data.time_unit = ""  # csv/parquet epoch timestamps: s, ms, us or ns; "" detects it
  c.data.block_size_mb = 0  # csv read block (a line must fit in one); 0 = the reader's default
  c.data.split = "loo"
  c.data.split_times = (0.8, 0.9)  # temporal split cut-offs: quantiles or Unix seconds
  c.data.kcore = 0
  c.data.shards = 0  # token files when prepared here; 0: one per ~250k events (data/shards.py)
  # How a missing data.dir is prepared: "local" (in memory) or a Beam runner (direct, dataflow,
  # flink, spark: `jaxrec data prepare --runner`, the same output); beam_options are Beam's
  # pipeline options, space-separated, e.g. "direct_num_workers=2 direct_running_mode=multi_processing".
  c.data.runner = "local"
  c.data.beam_options = ""
  c.data.merge_gap = MERGE_GAP
  c.data.events = ""  # keep only these event types, e.g. "click,play,like"; "" keeps all
  # Unix seconds: training targets only after this time, the tokens before stay as input; 0 = all.
  # --init-from with train.new_data_only sets it to the earlier run's last event.
  c.data.train_targets_after = 0
  # Training windows put the events of a user that share a timestamp in a new random order each
  # epoch (their order in the log is arbitrary: logs stamped by the second or the day).
  c.data.shuffle_ties = False

  c.model = ml_collections.ConfigDict()
  c.model.name = "sasrec"
  c.model.max_len = 100
  c.model.dim = 64
  c.model.num_layers = 2
  c.model.num_heads = 2
  c.model.mlp_dim = 256
  c.model.dropout = 0.2
  # > 0: a trend prior (train/sequential.py): every score adds the item's log counts over the
  # last W days and over all time before the request, weighted by a gate that reads the query
  # and the time since the user's last event; 0 = off.
  c.model.trend_window_days = 0.0

  c.loss = ml_collections.ConfigDict()
  c.loss.name = "ce"  # ce | sampled_softmax | bce | gbce
  c.loss.num_negatives = 256
  c.loss.gbce_t = 0.75
  c.loss.mask_prob = 0.2  # BERT4Rec
  # Leave the items a position has already read out of its softmax (evaluation and serving
  # never rank a watched item): for logs without re-watches; ce / sampled_softmax (BERT4Rec:
  # every other item of its window, which it reads whole).
  c.loss.exclude_watched = False
  c.loss.label_smoothing = 0.0  # ce: this share of each label spread over the catalogue
  # Also train the query of an empty history (each user's first item, predicted from nothing):
  # what a new user's first request reads; forward in time many test users have no history.
  c.loss.empty_history_target = False

  c.optimizer = ml_collections.ConfigDict()
  c.optimizer.learning_rate = 2e-3
  c.optimizer.schedule = "cosine"
  c.optimizer.warmup_steps = 50
  c.optimizer.end_learning_rate_factor = 0.1
  c.optimizer.weight_decay = 0.0
  c.optimizer.clip_norm = 1.0
  c.optimizer.b1 = 0.9
  c.optimizer.b2 = 0.98

  c.train = ml_collections.ConfigDict()
  c.train.batch_size = 128
  c.train.num_steps = 420  # 60 epochs of 943 users at batch 128
  c.train.log_every = 20
  c.train.eval_every = 35
  c.train.metric = "ndcg@10"
  c.train.patience = 5  # evaluations without improvement; 0 = never stop early
  c.train.keep_checkpoints = 2
  c.train.max_nonfinite_in_a_row = 10
  # Warm start (jaxrec/train/warm_start.py): an earlier workdir whose best checkpoint starts this
  # run, vocabularies grown by raw id; then train on the data after its cut-off only, and freeze
  # "" nothing, "backbone" (every restored parameter: only new heads train) or a path regex.
  c.train.init_from = ""
  c.train.new_data_only = True
  c.train.freeze = ""

  c.eval = ml_collections.ConfigDict()
  c.eval.batch_size = 256
  c.eval.ks = (10, 20)
  # The targets of each user's evaluated window: its first N interactions; 0 = every one of them
  # (forward in time on a temporal split: the whole test window, users with and without history
  # before it reported apart too). jaxrec/eval/protocols.py names the protocols.
  c.eval.max_targets = 1
  # True: "full ranking, history excluded" (each user's earlier items cannot be recommended);
  # False: "full ranking, nothing excluded (RecBole's sequential protocol)". Settable at eval time:
  # jaxrec eval --workdir W --config.eval.exclude_seen=False.
  c.eval.exclude_seen = True
  c.eval.sampled_negatives = 0  # > 0 adds the sampled protocol, reported separately
  c.eval.sampled_by = "uniform"  # uniform | popularity

  c.mesh = ml_collections.ConfigDict()
  c.mesh.shape = (-1, 1)
  c.mesh.axes = DEFAULT_AXES
  c.mesh.rules = ml_collections.ConfigDict(DEFAULT_RULES)
  return c


def two_tower_config() -> ml_collections.ConfigDict:
  """Two-tower retrieval on MovieLens-100K, evaluated under the sequential models' protocol."""
  config = sequential_config()
  config.task = "two_tower"
  config.model = ml_collections.ConfigDict({
      "name": "two_tower", "max_len": 100, "dim": 64, "hidden": 256, "title_buckets": 4096,
      "temperature": 0.05, "id_dropout": 0.1,
      "half_life_seconds": 3600.0,  # short-term interest: an hour-old item counts half
      # The history encoder: "pooling" (time-decayed short-term + long-term means) or "sasrec"
      # (a causal transformer; num_layers, num_heads, dropout apply to it).
      "query_encoder": "pooling", "num_layers": 2, "num_heads": 2, "dropout": 0.2,
  })
  config.loss = ml_collections.ConfigDict({
      "positions_per_user": 8,
      "frequency": "streaming",  # logQ from online estimates (Yi et al.) or "counts"
      "frequency_alpha": 0.05,  # the estimator's moving-average rate
      "uniform_negatives": 0,  # > 0: mixed negatives, this many uniform draws per batch
  })
  return config


def foundation_config() -> ml_collections.ConfigDict:
  """The foundation model (task `foundation`) on MovieLens-100K; see jaxrec/train/foundation.py."""
  config = sequential_config()
  config.task = "foundation"
  config.model = ml_collections.ConfigDict({
      "name": "foundation", "max_len": 100, "dim": 64, "num_layers": 2, "num_heads": 2,
      "mlp_dim": 256, "dropout": 0.2,
      "combine": "sum",  # token fields: "sum" or "concat" (+ projection)
      # Attention: window None = full causal; an int W = W recent keys + num_global learned
      # attention-sink tokens (before the history: they see no history, so they summarise
      # nothing), in chunks of `chunk` queries (memory linear in max_len).
      "window": ml_collections.FieldReference(None, field_type=int), "num_global": 0,
      "chunk": 128,
      "id_dropout": 0.1,  # share of item ids replaced by OOV each step: metadata learns the item
      "title_buckets": 4096,
      "item_metadata": "",  # metadata fields of an item's vector, e.g. "genres,year"; "" = all
      # Each position also reads the log-bucketed time until the next token: at the last one, the
      # time from the last event to the request (a user back after a day starts a new session).
      "request_gap": False,
      # Each position also reads the mean vector of the items watched before the window: the
      # long-run taste that a window of recent tokens misses (on synthetic-long cold start it
      # did not raise Recall@50 among new items: benchmarks/cold_start.py).
      "history_summary": False,
      "trend_window_days": 0.0,  # as in sequential_config
  })
  config.loss = ml_collections.ConfigDict({
      "name": "ce",  # ce (full softmax) | sampled_softmax (logQ-corrected)
      "num_negatives": 256,
      # Per-token weight of the next-token loss: by the target's event type (types left out: 1),
      # times (1 + value_weight * engagement value).
      "event_weights": {"impression": 0.1, "skip": 0.1, "click": 0.5, "report": 0.0},
      "value_weight": 0.0,
      "horizon": 1, "horizon_decay": 0.5,  # multi-token prediction: items 1..horizon ahead
      "genre_weight": 0.0, "event_type_weight": 0.0,  # auxiliary heads
      "exclude_watched": False, "label_smoothing": 0.0,  # as in sequential_config
      # + this × the loss of an item drawn from the next future_window tokens: what the user
      # watches after this session too (a returning user starts another interest; on
      # synthetic-long cold start it lifts Recall@50 among new items 0.391 -> 0.504).
      "future_weight": 0.0, "future_window": 100,
  })
  return config


def _head(label: str, kind: str = "binary", weight: float = 1.0) -> dict:
  """A ranking head: its label, kind (binary | regression | weighted_logistic), loss weight."""
  return {"label": label, "kind": kind, "weight": weight}


def ranking_config() -> ml_collections.ConfigDict:
  """Multi-task DLRM ranking of MovieLens-100K impressions: rated items and sampled unrated ones."""
  config = sequential_config()
  config.task = "ranking"
  config.data.negatives_per_positive = 4  # datasets without impressions: unseen items shown
  config.model = ml_collections.ConfigDict({
      "name": "dlrm", "dim": 16, "bottom": (64,), "top": (256, 128),
      "interaction": "dot",  # dot | dcn | fm | none
      "cross_layers": 2, "wide": False, "deep": True, "pooling": "sum", "dropout": 0.0,
      "exclude_features": "",  # e.g. "user,user_zip"
      "stack_tables_below": 0,  # tables with fewer rows share one stacked table
      # A foundation (or sequential) workdir on the same dataset: its frozen query vector over
      # each user's tokens strictly before an example's time becomes one more feature
      # (train/user_features.py); "" = off.
      "user_embedding_from": "",
  })
  config.heads = ml_collections.ConfigDict({
      "click": _head("click"), "like": _head("like"), "rating": _head("value", "regression")})
  config.policy = ml_collections.ConfigDict({"click": 1.0, "like": 1.0})
  config.embedding = ml_collections.ConfigDict({
      # True: a row optimizer updates the rows a batch touched; False: optax on whole tables.
      "sparse": True, "optimizer": "rowwise_adagrad", "learning_rate": 0.05,
      # optax.adagrad starts its accumulator at 0.1; an embedding row's gradients are far smaller
      # than that, so a rarely seen row (a user's) would barely move. TorchRec starts at 0.
      "initial_accumulator": 0.0})
  config.optimizer.learning_rate = 1e-3
  config.optimizer.b2 = 0.999
  config.train.batch_size = 1000  # 200 ratings and 800 sampled unrated items
  config.train.num_steps = 1000
  config.train.log_every = 100
  config.train.eval_every = 100
  config.train.metric = "click/auc"
  config.eval.batch_size = 1000
  return config


def synthetic_ranking_config() -> ml_collections.ConfigDict:
  """Multi-task DLRM ranking of synthetic impressions, with a head for every outcome."""
  config = ranking_config()
  config.data.dataset = "synthetic"
  config.data.dir = "data/synthetic-ranking"
  config.data.synthetic = ml_collections.ConfigDict(
      {"num_users": 20_000, "num_items": 20_000, "num_events": 2_000_000, "seed": 0})
  config.data.split = "temporal"
  config.data.negatives_per_positive = 0  # the log holds real non-engaged impressions
  config.heads = ml_collections.ConfigDict({
      "click": _head("click"), "watch": _head("watch", "regression"),
      "complete": _head("complete"), "like": _head("like"), "share": _head("share"),
      "skip": _head("skip"), "report": _head("report")})
  # The generator's users do not follow creators, so there is no follow head here.
  config.policy = ml_collections.ConfigDict({"watch": 3.0, "complete": 2.0, "share": 1.5,
                                             "report": -5.0, "skip": -1.0})
  config.embedding.learning_rate = 0.2  # picked on validation click AUC (0.05, 0.2)
  config.train.batch_size = 1024
  config.train.num_steps = 2000
  config.train.eval_every = 500
  config.eval.batch_size = 4096
  return config


def tpu_ranking_config(users: int, items: int, events: int, mesh: tuple[int, int],
                       batch_size: int) -> ml_collections.ConfigDict:
  """The synthetic ranking task at TPU scale: 64-wide tables, a bigger MLP, `mesh` (data, model)."""
  config = synthetic_ranking_config()
  config.data.dir = f"data/synthetic-ranking-{users}"
  config.data.synthetic = ml_collections.ConfigDict(
      {"num_users": users, "num_items": items, "num_events": events, "seed": 0})
  config.model.dim = 64
  config.model.bottom = (512, 256)
  config.model.top = (1024, 1024, 512, 256)
  config.model.stack_tables_below = 10_000  # hour, device, genres, ...: one table, one update
  config.train.batch_size = config.eval.batch_size = batch_size
  config.train.num_steps = 20_000
  config.train.eval_every = 2_000
  config.mesh.shape = mesh
  return config


def long_history_data(config: ml_collections.ConfigDict,
                      num_users: int = 1000) -> ml_collections.ConfigDict:
  """`config` on the synthetic-long dataset (users with >= 2,000 tokens and drifting interests),
  trained with the full softmax over its 7,200 items, watched items left out."""
  config.data.dataset = "synthetic-long"
  config.data.dir = f"data/synthetic-long-{num_users}"
  config.data.synthetic = ml_collections.ConfigDict({"num_users": num_users, "seed": 0})
  # 7,200 items is a small catalogue: the full softmax costs a few s a step more than 256 sampled
  # negatives but ranks within a topic, which ~4 negatives per topic cannot teach (SASRec @200:
  # 0.13 validation NDCG@10 after 100 steps, against 0.11 for sampled softmax converged).
  config.loss.name = "ce"
  # Nobody re-watches in these histories: a softmax over watched items would teach the model
  # that an item popular with everyone is unlikely next (most have watched it), ranking the
  # unwatched popular items low.
  config.loss.exclude_watched = True
  config.eval.batch_size = 128
  return config


def long_context_foundation_config(max_len: int) -> ml_collections.ConfigDict:
  """The foundation model over `max_len` tokens of long histories: a 1,024-token sliding window
  plus 4 attention-sink tokens, in chunks of 128 queries, so memory grows linearly with
  max_len."""
  config = long_history_data(foundation_config())
  config.model.max_len = max_len
  # What the last position reads directly. In the synthetic-long world the rules' scorer gains
  # +5.5% test NDCG@10 from 512 to 1,024 tokens and +0.4% beyond (benchmarks/
  # foundation_long_context.py); the model at 2,048 tokens, before the request time: 0.1397
  # validation NDCG@10 against 0.1369 with 512 (within the noise, at the same step time).
  config.model.window = 1024
  # The time since the last event tells a returning user (a new session, another interest) from
  # one still watching: 0.1826 against 0.1397 validation NDCG@10 at 2,048 tokens (benchmarks/
  # foundation_long_context.py; it does not help cold start, see benchmarks/cold_start.py).
  config.model.request_gap = True
  config.model.num_global = 4
  config.model.chunk = 128
  config.train.batch_size = max(1, 16_384 // max_len)  # the same tokens per step at any length
  return config


def smoke(c: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
  """Shrinks a run to seconds, for tests and laptops."""
  if "max_len" in c.model:
    c.model.max_len = 20
  c.model.dim = 16
  if "mlp_dim" in c.model:
    c.model.mlp_dim = 32
  c.train.batch_size = 64
  c.train.num_steps = 6
  c.train.log_every = 2
  c.train.eval_every = 3
  c.eval.batch_size = 128
  return c


def variant(config: ml_collections.ConfigDict, arg: str | None) -> ml_collections.ConfigDict:
  """Applies a config file's `:arg`: none for the full run, `smoke` for a seconds-long one."""
  if arg is None:
    return config
  if arg == "smoke":
    return smoke(config)
  raise ValueError(f"unknown config variant {arg!r}: use no variant or ':smoke'")


def baseline_config(name: str, **model) -> ml_collections.ConfigDict:
  """A baseline experiment: the sequential configs' data and eval sections, and model `name`."""
  defaults = sequential_config()
  c = ml_collections.ConfigDict()
  c.task = "baseline"
  c.seed = defaults.seed
  c.data = defaults.data
  c.eval = defaults.eval
  c.eval.ks = (10, 20, 100)
  c.model = ml_collections.ConfigDict({"name": name, **model})
  return c


def baseline_variant(config: ml_collections.ConfigDict, arg: str | None,
                     **smoke_model) -> ml_collections.ConfigDict:
  """A baseline config file's `:arg`: none for the full run, `smoke` sets `smoke_model` in
  config.model (the few settings that make a fit take seconds)."""
  if arg is None:
    return config
  if arg == "smoke":
    config.model.update(smoke_model)
    return config
  raise ValueError(f"unknown config variant {arg!r}: use no variant or ':smoke'")
