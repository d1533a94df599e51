"""Time-decayed popularity on MovieLens-100K: every interaction before the request counts
exp2(-age / half-life) (jaxrec/baselines/popularity.py), the half-life chosen on validation
NDCG@10 from `model.half_life_days` and recorded in results.json (`selection`). Evaluated under
the trained models' protocol; forward in time:

  jaxrec train --config configs/movielens_decayed_popularity.py --workdir workdirs/ml100k-decayed-pop
  jaxrec data prepare --dataset movielens-100k --split temporal --split-times 0.8,0.9 \
      --out data/movielens-100k-temporal
  jaxrec train --config configs/movielens_decayed_popularity.py --workdir workdirs/ml100k-t-decayed-pop \
      --config.data.dir=data/movielens-100k-temporal --config.data.split=temporal \
      --config.eval.max_targets=0
  jaxrec train --config configs/movielens_decayed_popularity.py:smoke --workdir /tmp/smoke
"""

from jaxrec.train.defaults import baseline_config, baseline_variant


def get_config(arg=None):
  config = baseline_config("decayed_popularity", half_life_days=(1, 3, 7, 14, 30, 60, 120))
  return baseline_variant(config, arg, half_life_days=(7, 30))
