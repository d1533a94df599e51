"""What the Beam preparation reads: a source split into parts that workers read independently.

A part is a small, picklable description (a file, a synthetic chunk, a range of rows) that a
worker turns into an `EventLog` with `read_part`. Parts are numbered in the order the local
path would concatenate them, and each row keeps its position within its part, so (part, row)
is the row's place in the whole log: the tie-break that keeps same-second events in the log's
order, as the local path's stable sort does.

- csv / parquet: `--path` is a file, a directory of part files (Spark's and Hive's layout:
  every `.csv`/`.tsv`/`.txt` or `.parquet`/`.pq` file in it, by name, skipping `_SUCCESS`,
  `.crc` and hidden files) or a glob. Each part is read by the local reader (`load_tabular`),
  so column mapping, timestamp forms, error messages and exact-duplicate rows are handled the
  same way, part by part: a duplicate is dropped only when it repeats a row of its own part.
- synthetic: one part per chunk of `chunk_users` users; each worker rebuilds the small
  per-item and per-user state and generates its chunk (synthetic.generate_chunk).
- every other dataset (MovieLens, synthetic-long): read on the machine that launches the
  pipeline (they fit in memory by construction) and handed to the workers in row ranges.
"""

from __future__ import annotations

import dataclasses
import functools
import glob
import json
import os

import numpy as np

from jaxrec.data.events import EventLog, SideTable
from jaxrec.errors import UserError

ROWS_PER_PART = 250_000  # in-memory sources: rows handed to a worker at a time
_SKIPPED = ("_SUCCESS", "_SUCCESS.crc")


@dataclasses.dataclass
class Source:
  name: str                      # the manifest's "dataset"
  parts: list[tuple]             # read_part(part) -> (EventLog, notes), in log order
  items: SideTable | tuple       # a table, or ("file", path, key, mapped column, delimiter)
  users: SideTable | tuple
  notes: list[str] = dataclasses.field(default_factory=list)  # known before any part is read
  source_config: dict | None = None


def plan(name: str, *, data_dir: str | None = None, path: str | None = None,
         columns: dict[str, str] | None = None, delimiter: str = ",",
         items_path: str | None = None, users_path: str | None = None,
         time_unit: str | None = None, block_size_mb: float | None = None,
         synthetic: dict | None = None) -> Source:
  """The parts of a named source; the arguments are those of sources.load_raw."""
  from jaxrec.data import sources
  if name not in sources.DATASETS:
    raise UserError(f"unknown dataset {name!r}. Choose one of: {', '.join(sources.DATASETS)}.")
  if name in ("csv", "parquet"):
    return _tabular(name, path, columns, delimiter, items_path, users_path, time_unit,
                    block_size_mb)
  if name == "synthetic":
    from jaxrec.data import synthetic as synth
    config = synth.SyntheticConfig(**(synthetic or {}))
    items, _, users = synth.world(config)
    spec = json.dumps(dataclasses.asdict(config), sort_keys=True)
    return Source("synthetic", [("synthetic", spec, k) for k in range(synth.num_chunks(config))],
                  items.table, users, source_config=dataclasses.asdict(config))
  raw = sources.load_raw(name, data_dir=data_dir, path=path, columns=columns,
                         delimiter=delimiter, items_path=items_path, users_path=users_path,
                         time_unit=time_unit, block_size_mb=block_size_mb, synthetic=synthetic)
  n = len(raw.events)
  parts = [("rows", raw.events.take(np.arange(lo, min(lo + ROWS_PER_PART, n))))
           for lo in range(0, n, ROWS_PER_PART)]
  return Source(raw.name, parts, raw.items, raw.users, list(raw.notes), raw.source_config)


def part_files(path: str, extensions: tuple[str, ...]) -> list[str]:
  """The files `path` names: itself, the part files of a directory, or a glob's matches."""
  if os.path.isdir(path):
    names = sorted(n for n in os.listdir(path) if not n.startswith((".", "_"))
                   and n not in _SKIPPED and not n.endswith(".crc"))
    files = [os.path.join(path, n) for n in names if n.lower().endswith(extensions)]
    if not files:
      raise UserError(f"directory {path} holds no {' or '.join(extensions)} files "
                      f"(it has: {', '.join(names[:10]) or 'nothing'}). Point --path at the "
                      "directory of part files, a glob (quoted) or one file.")
    others = [n for n in names if not n.lower().endswith(extensions)]
    if others:  # skipping them would drop their events without a word
      raise UserError(f"directory {path} holds {len(others)} file(s) that are not "
                      f"{' or '.join(extensions)} beside its parts (e.g. {others[0]}). Move them "
                      "out, or select the parts with a quoted glob such as --path "
                      f"'{os.path.join(path, '*' + extensions[0])}'.")
    return files
  if glob.has_magic(path):
    files = sorted(f for f in glob.glob(path) if os.path.isfile(f))
    if not files:
      raise UserError(f"--path {path!r} matches no file. Check the pattern (quote it, so the "
                      "shell does not expand it).")
    wrong = [f for f in files if not f.lower().endswith(extensions)]
    if wrong:
      raise UserError(f"--path {path!r} matches {wrong[0]}, which is not "
                      f"{' or '.join(extensions)}: narrow the pattern.")
    return files
  if not path.lower().endswith(extensions):
    raise UserError(f"expected a file ending in {' or '.join(extensions)}, a directory of them "
                    f"or a glob, got {path}.")
  return [path]


def _tabular(name, path, columns, delimiter, items_path, users_path, time_unit,
             block_size_mb) -> Source:
  from jaxrec.data import tabular
  if path is None:
    raise UserError(f"dataset {name!r} reads your own file: give it with --path FILE (or a "
                    "directory of part files, or a glob).")
  for given in (path, items_path, users_path):
    if given and "://" in given:
      raise UserError(f"{given}: URLs (gs://, s3://) are not supported yet; give a path every "
                      "worker can read (for a distributed runner, on storage they all mount).")
  extensions = tabular.PARQUET_EXTENSIONS if name == "parquet" else tabular.CSV_EXTENSIONS
  files = part_files(path, extensions)
  tabular._check_mapping(columns or {})
  parts = [("file", f, dict(columns or {}), delimiter, time_unit, block_size_mb) for f in files]
  mapped = columns or {}
  items = (("file", items_path, "item", mapped.get("item", "item"), delimiter) if items_path
           else SideTable.empty())
  users = (("file", users_path, "user", mapped.get("user", "user"), delimiter) if users_path
           else SideTable.empty())
  base = os.path.basename(path.rstrip("/"))
  if len(files) == 1 and not os.path.isdir(path) and not glob.has_magic(path):
    base = base[:base.rfind(".")]  # as the local path names it
  elif glob.has_magic(path):
    base = os.path.basename(os.path.dirname(path)) or "events"
  return Source(base, parts, items, users)


def read_part(part: tuple) -> tuple[EventLog, list[str]]:
  kind = part[0]
  if kind == "file":
    from jaxrec.data.tabular import load_tabular
    _, path, columns, delimiter, time_unit, block_size_mb = part
    raw = load_tabular(path, columns or None, delimiter=delimiter, time_unit=time_unit,
                       block_size_mb=block_size_mb)
    return raw.events, list(raw.notes)
  if kind == "synthetic":
    from jaxrec.data import synthetic
    _, spec, chunk = part
    return synthetic.generate_chunk(_config(spec), chunk, _world(spec)), []
  if kind == "rows":
    return part[1], []
  raise ValueError(f"unknown part {kind!r}")


@functools.lru_cache(maxsize=2)
def _world(spec: str):
  from jaxrec.data import synthetic
  return synthetic.world(_config(spec))


def _config(spec: str):
  from jaxrec.data.synthetic import SyntheticConfig
  return SyntheticConfig(**json.loads(spec))


def side_table(spec: SideTable | tuple, event_ids: np.ndarray, notes: list[str]) -> SideTable:
  """A side table: given, or read from its file now, checked against the events' ids as the
  local reader checks it (its notes appended to `notes`)."""
  if isinstance(spec, SideTable):
    return spec
  from jaxrec.data import tabular
  _, path, key, mapped, delimiter = spec
  return tabular._side_table(path, key, mapped, event_ids, delimiter, notes)
