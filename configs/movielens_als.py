"""Implicit ALS with user and item biases on MovieLens-100K, evaluated under the trained models'
protocol. Picked on validation NDCG@10 over factors in {16, 32, 64, 128}, regularization in
{0.1, 1, 3, 10, 30, 100} and alpha in {0.25, 0.5, 1, 2, 5, 20, 50}: small alpha wins here (every
rating is one interaction, so confidence only separates seen from unseen).

  jaxrec train --config configs/movielens_als.py --workdir workdirs/ml100k-als
  jaxrec train --config configs/movielens_als.py:smoke --workdir /tmp/smoke
"""

from jaxrec.train.defaults import baseline_config, baseline_variant


def get_config(arg=None):
  config = baseline_config("als", factors=64, regularization=3.0, iterations=15, alpha=0.5,
                           cg_steps=3)
  return baseline_variant(config, arg, factors=8, iterations=2)
