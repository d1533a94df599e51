"""ItemKNN (shrunk cosine, top-k neighbours per item) on MovieLens-100K, evaluated under the
trained models' protocol. k and shrink were picked on validation NDCG@10 over k in
{10, 20, 50, 100, 200, 400, all} and shrink in {0, 10, 50, 200}.

  jaxrec train --config configs/movielens_itemknn.py --workdir workdirs/ml100k-itemknn
  jaxrec train --config configs/movielens_itemknn.py:smoke --workdir /tmp/smoke
"""

from jaxrec.train.defaults import baseline_config, baseline_variant


def get_config(arg=None):
  config = baseline_config("itemknn", k_neighbors=10, shrink=0.0)
  return baseline_variant(config, arg)  # already seconds: smoke changes nothing
