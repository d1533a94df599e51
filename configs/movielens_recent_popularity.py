"""Recent popularity on MovieLens-100K: items ranked by their interactions in the last W days
before the request (jaxrec/baselines/popularity.py), W chosen on validation NDCG@10 from
`model.window_days` and recorded in results.json (`selection`). Evaluated under the trained
models' protocol; forward in time it is the bar a learned model has to clear:

  jaxrec train --config configs/movielens_recent_popularity.py --workdir workdirs/ml100k-recent-pop
  jaxrec data prepare --dataset movielens-100k --split temporal --split-times 0.8,0.9 \
      --out data/movielens-100k-temporal
  jaxrec train --config configs/movielens_recent_popularity.py --workdir workdirs/ml100k-t-recent-pop \
      --config.data.dir=data/movielens-100k-temporal --config.data.split=temporal \
      --config.eval.max_targets=0
  jaxrec train --config configs/movielens_recent_popularity.py:smoke --workdir /tmp/smoke
"""

from jaxrec.train.defaults import baseline_config, baseline_variant


def get_config(arg=None):
  config = baseline_config("recent_popularity", window_days=(1, 3, 7, 14, 30, 60, 120))
  return baseline_variant(config, arg, window_days=(7, 30))
