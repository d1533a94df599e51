"""The named evaluation protocols of catalogue ranking, stated beside every result.

Two choices make a full-ranking number comparable, or not, with another library's:
  * what is excluded from the ranking (`eval.exclude_seen`):
      True   "full ranking, history excluded": each user's earlier items cannot be recommended
             (jaxrec's default; RecBole's protocol for general models such as BPR);
      False  "full ranking, nothing excluded (RecBole's sequential protocol)": the model's scores
             are ranked as they are, only padding and out-of-vocabulary ids masked (RecBole 1.2.1
             masks only item 0 for sequential models in full ranking).
  * which interactions of the evaluated window are targets (`eval.max_targets`): the first N of
    each user's window, or with 0 every interaction in it (one ranking per user; forward in time on
    a temporal split, the whole test window). On a temporal split, users without history before
    the window are reported separately too (`with_history/...`, `no_history/...`).
"""

from __future__ import annotations

EXCLUDED = "full ranking, history excluded"
NOT_EXCLUDED = "full ranking, nothing excluded (RecBole's sequential protocol)"
# Metric-key prefixes of the two groups of users of a temporal split.
WITH_HISTORY, NO_HISTORY = "with_history", "no_history"


def exclude_seen(eval_config) -> bool:
  """config.eval.exclude_seen; True for configs written before it existed."""
  return bool(eval_config.get("exclude_seen", True))


def every_target(eval_config) -> bool:
  return int(eval_config.get("max_targets", 1)) == 0


def by_history(ds) -> bool:
  """Whether a dataset's evaluation reports users with and without history apart: on a temporal
  split a user may have nothing before the window (leave-one-out holds out only users with at
  least two earlier tokens)."""
  return ds.manifest["split"]["kind"] == "temporal"


def ranking_protocol(ds, split: str, eval_config) -> dict:
  """The protocol of a full-ranking result on `split` of `ds` under `eval_config` (config.eval):
  its name, `exclude_seen`, `targets`, and a sentence with the details."""
  excluded = exclude_seen(eval_config)
  items = ds.stats["items"]
  kind = ds.manifest["split"]["kind"]
  max_targets = int(eval_config.get("max_targets", 1))
  if max_targets == 0:
    targets = "every interaction in the window"
  elif max_targets == 1:
    targets = "the first interaction in the window"
  else:
    targets = f"the first {max_targets} interactions in the window"
  what = ("each user's earlier items excluded" if excluded
          else "nothing excluded (a user's earlier items can be recommended)")
  out = {"protocol": EXCLUDED if excluded else NOT_EXCLUDED,
         "protocol_detail": f"full ranking over all {items} items, {what}; {kind} split, {split} "
                            f"set, targets: {targets}",
         "exclude_seen": excluded, "targets": targets, "split": split, "split_kind": kind,
         "items_ranked": items}
  if by_history(ds):
    out["by_history"] = (f"{WITH_HISTORY}/* and {NO_HISTORY}/*: users with and without "
                         "interactions before the window")
  return out
