"""One entry point for every dataset source: `load_raw(name, ...)` -> RawDataset."""

from __future__ import annotations

from jaxrec.data.events import RawDataset
from jaxrec.errors import UserError

DATASETS = ("movielens-100k", "movielens-1m", "movielens-20m", "movielens-25m", "synthetic",
            "synthetic-long", "csv", "parquet")


def load_raw(name: str, *, data_dir: str | None = None, path: str | None = None,
             columns: dict[str, str] | None = None, delimiter: str = ",",
             items_path: str | None = None, users_path: str | None = None,
             time_unit: str | None = None, block_size_mb: float | None = None,
             synthetic: dict | None = None) -> RawDataset:
  """Loads a named source. `path`/`columns`/`time_unit`/... apply to csv and parquet (see
  load_tabular), `synthetic` holds SyntheticConfig (or, for synthetic-long, LongHistoryConfig)
  fields."""
  if name not in DATASETS:
    raise UserError(f"unknown dataset {name!r}. Choose one of: {', '.join(DATASETS)}.")
  if name == "movielens-100k":
    from jaxrec.data.movielens import load_movielens_100k
    return load_movielens_100k(data_dir)
  if name.startswith("movielens-"):
    from jaxrec.data.tfds_movielens import load_tfds_movielens
    return load_tfds_movielens(name, data_dir)
  if name == "synthetic":
    from jaxrec.data.synthetic import SyntheticConfig, generate
    return generate(SyntheticConfig(**(synthetic or {})))
  if name == "synthetic-long":  # long histories with drifting interests (issue 7)
    from jaxrec.data.synthetic_sessions import LongHistoryConfig, generate_long_histories
    return generate_long_histories(LongHistoryConfig.from_options(synthetic))
  if path is None:
    raise UserError(f"dataset {name!r} reads your own file: give it with --path FILE.")
  expected = (".parquet", ".pq") if name == "parquet" else (".csv", ".tsv", ".txt")
  if not path.lower().endswith(expected):
    raise UserError(f"--dataset {name} expects a file ending in {' or '.join(expected)}, got "
                    f"{path}. Use --dataset {'csv' if name == 'parquet' else 'parquet'} instead?")
  from jaxrec.data.tabular import load_tabular
  return load_tabular(path, columns, delimiter=delimiter, items_path=items_path,
                      users_path=users_path, time_unit=time_unit, block_size_mb=block_size_mb)
