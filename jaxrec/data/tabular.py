"""A user's own event log from a CSV or Parquet file, with optional item and user side tables.

Every mistake in the file becomes a `UserError` that names the file, the line (CSV, counting the
header as line 1) or row (Parquet) and the column, and says how to fix it: a log that fails
halfway through preparation with a pyarrow traceback is the worst first experience we can give.

CSV columns are read as text and typed here, not by pyarrow's inference, so that ids keep their
exact spelling ("007" stays a string; an id column is int64 only when every id is a plain
integer) and a bad value can be reported with its line instead of as a failed conversion.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from jaxrec.data.events import EventLog, EventType, RawDataset, SideTable, parse_event_types
from jaxrec.errors import UserError

FIELDS = ("user", "item", "timestamp", "event", "value", "device", "locale")
REQUIRED = ("user", "item", "timestamp")
CSV_EXTENSIONS = (".csv", ".tsv", ".txt")
PARQUET_EXTENSIONS = (".parquet", ".pq")
MAPPING_SYNTAX = "--columns user=uid,item=movie,timestamp=ts"

_INTEGER_ID = r"^-?(0|[1-9][0-9]*)$"  # ids that survive a round trip through int64 unchanged
_INTEGER = r"^[+-]?[0-9]+$"
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
# A time of day followed by a zone ("Z", "+02:00", "-0500"): such strings parse only as zoned.
_ZONED = r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]*)?)?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$"
_TIMESTAMP_FORMS = ("Unix seconds (1700000000 or 1700000000.5) or an ISO-8601 date-time "
                    "(2023-11-14, 2023-11-14T22:13:20 or 2023-11-14T22:13:20+01:00)")


def parse_column_mapping(text: str) -> dict[str, str]:
  """'user=uid,item=movie,timestamp=ts' -> {'user': 'uid', 'item': 'movie', 'timestamp': 'ts'}."""
  mapping = {}
  for part in text.split(","):
    if not part.strip():
      continue  # tolerate "a=b," and "a=b,,c=d"
    field, sep, column = (s.strip() for s in part.partition("="))
    if not sep or not field or not column:
      raise UserError(
          f"--columns: cannot read {part.strip()!r} in {text!r}. Write field=column pairs "
          f"separated by commas, e.g. {MAPPING_SYNTAX}")
    if field not in FIELDS:
      raise UserError(
          f"--columns: unknown field {field!r} in {text!r}. The fields are {', '.join(FIELDS)} "
          f"(user, item and timestamp are required); each maps to a column of your file, e.g. "
          f"{MAPPING_SYNTAX}")
    if field in mapping:
      raise UserError(f"--columns: field {field!r} is mapped twice in {text!r}; keep one.")
    mapping[field] = column
  if not mapping:
    raise UserError(f"--columns is empty. Give field=column pairs, e.g. {MAPPING_SYNTAX}")
  return mapping


def load_tabular(path: str, columns: dict[str, str] | None = None, *, delimiter: str = ",",
                 items_path: str | None = None, users_path: str | None = None) -> RawDataset:
  """Reads an event log. `columns` maps our field names to the file's column names; a field it
  leaves out is looked for under its own name. user, item and timestamp are required; without an
  event column every row is an INTERACTION, without a value column every value is 1.0."""
  mapping = _check_mapping(columns or {})
  log = _File(path, "events file", delimiter)
  names = log.column_names()
  if not names:
    raise UserError(f"{path} is empty: it contains no events. Give a file with a header line "
                    "and one event per line.")
  used = {f: mapping.get(f, f) for f in FIELDS if mapping.get(f, f) in names}
  missing = [f for f in FIELDS if f not in used and (f in REQUIRED or f in mapping)]
  if missing:
    example = ",".join(f"{f}={used.get(f, '<column>')}" for f in REQUIRED)
    raise UserError(
        f"{path}: no column for the {' and '.join(missing)} field(s) (looked for "
        f"{', '.join(repr(mapping.get(f, f)) for f in missing)}). The file's columns are: "
        f"{', '.join(map(repr, names))}. Say which column holds each field with --columns "
        f"(columns={{...}} in Python), e.g. --columns {example}")
  table = log.read(list(dict.fromkeys(used.values())))
  if table.num_rows == 0:
    raise UserError(f"{path} has a header but contains no events: add one event per line.")

  user = _ids(log, table.column(used["user"]), "user", used["user"])
  item = _ids(log, table.column(used["item"]), "item", used["item"])
  events = EventLog(
      user=user,
      item=item,
      timestamp=_timestamps(log, table.column(used["timestamp"]), used["timestamp"]),
      event_type=(_event_types(log, table.column(used["event"]), used["event"])
                  if "event" in used else
                  np.full(table.num_rows, EventType.INTERACTION, np.int8)),
      value=(_values(log, table.column(used["value"]), used["value"]) if "value" in used
             else np.ones(table.num_rows, np.float32)),
      device=_strings(table.column(used["device"])) if "device" in used else None,
      locale=_strings(table.column(used["locale"])) if "locale" in used else None)
  items = (_side_table(items_path, "item", used["item"], item.dtype, delimiter) if items_path
           else SideTable.empty())
  users = (_side_table(users_path, "user", used["user"], user.dtype, delimiter) if users_path
           else SideTable.empty())
  name = os.path.basename(path)
  return RawDataset(name[:name.rfind(".")], events, items, users)


def _check_mapping(columns: dict[str, str]) -> dict[str, str]:
  unknown = sorted(set(columns) - set(FIELDS))
  if unknown:
    raise UserError(f"unknown field(s) {', '.join(map(repr, unknown))} in the column mapping. "
                    f"The fields are {', '.join(FIELDS)}, e.g. {MAPPING_SYNTAX}")
  for field, name in columns.items():
    if not isinstance(name, str) or not name:
      raise UserError(f"the column mapping gives {field!r} the column {name!r}: name a column "
                      f"of your file, e.g. {MAPPING_SYNTAX}")
  return columns


class _File:
  """One input file: its format, its columns, and where its data rows are, for messages."""

  def __init__(self, path: str, role: str, delimiter: str = ","):
    self.path, self.role = path, role
    if not os.path.isfile(path):
      problem = "is a directory, not a file" if os.path.isdir(path) else "not found"
      raise UserError(f"{role} {path} {problem}. Check the path (relative paths start from "
                      f"{os.getcwd()}).")
    extension = os.path.splitext(path)[1].lower()
    if extension in CSV_EXTENSIONS:
      self.csv = True
    elif extension in PARQUET_EXTENSIONS:
      self.csv = False
    else:
      raise UserError(
          f"{role} {path}: unsupported extension {extension or '(none)'!r}. Use CSV "
          f"({', '.join(CSV_EXTENSIONS)}) or Parquet ({', '.join(PARQUET_EXTENSIONS)}); rename "
          "the file if it already is one of these.")
    if delimiter in ("\\t", "tab"):  # what a shell hands us for --delimiter '\t'
      delimiter = "\t"
    elif extension == ".tsv" and delimiter == ",":  # "," is only the default: .tsv means tabs
      delimiter = "\t"
    if len(delimiter) != 1:
      raise UserError(f"--delimiter must be one character, got {delimiter!r}.")
    self.delimiter = delimiter

  def column_names(self) -> list[str]:
    if not self.csv:
      try:
        return pq.read_schema(self.path).names
      except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{self.role} {self.path} is not a readable Parquet file ({e}). "
                        "Check that it was written completely, or export it again.")
    # The header line, read with the same quoting rules as pyarrow; empty lines are skipped.
    with open(self.path, newline="", encoding="utf-8-sig", errors="replace") as f:
      for row in csv.reader(f, delimiter=self.delimiter):
        if row:
          return row
    return []

  def read(self, names: list[str], threads: bool = True) -> pa.Table:
    if not self.csv:
      try:
        return pq.read_table(self.path, columns=names)
      except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{self.role} {self.path} is not a readable Parquet file ({e}). "
                        "Check that it was written completely, or export it again.")
    invalid = []

    def on_invalid(row):
      invalid.append(row)
      return "error"

    try:
      return pacsv.read_csv(
          self.path,
          read_options=pacsv.ReadOptions(use_threads=threads),
          parse_options=pacsv.ParseOptions(delimiter=self.delimiter,
                                           invalid_row_handler=on_invalid),
          convert_options=pacsv.ConvertOptions(
              column_types={n: pa.string() for n in self.column_names()},
              include_columns=names))
    except pa.ArrowException as e:
      if not invalid:
        raise UserError(f"{self.role} {self.path} cannot be read as CSV: {e}. If it is not "
                        "UTF-8 text, save it as UTF-8; if it uses another field separator, "
                        f"pass --delimiter (now {self.delimiter!r}).")
      row = invalid[0]
      if row.number is None:  # parallel parsing doesn't know row numbers: find it on one thread
        return self.read(names, threads=False)
      raise UserError(
          f"{self.role} {self.path}, line {self._physical_line(row.number)}: "
          f"{row.actual_columns} field(s) where the header has {row.expected_columns}: "
          f"{row.text!r}. Fix or delete that line (quote a value that contains "
          f"{self.delimiter!r}); if the file uses another separator, pass --delimiter.")

  def where(self, row: int) -> str:
    """'events file FILE, line N' for the 0-based data row `row`."""
    return f"{self.role} {self.path}, {self.line(row)}"

  def line(self, row: int) -> str:
    """'line N' (CSV, the header is line 1) or 'row N' (Parquet) for the 0-based data row."""
    return f"line {self._physical_line(row + 2)}" if self.csv else f"row {row + 1}"

  def _physical_line(self, number: int) -> int:
    """pyarrow numbers rows skipping empty lines (header = 1); a message wants the line number
    an editor shows. Only called on the error path, so a scan of the file is fine."""
    seen = 0
    with open(self.path, "rb") as f:
      for line_number, line in enumerate(f, start=1):
        if line.strip(b"\r\n"):
          seen += 1
          if seen == number:
            return line_number
    return number


def _first(mask) -> int | None:
  """Index of the first true value of a boolean (Chunked)Array, nulls counting as false."""
  hits = np.flatnonzero(pc.fill_null(mask, False).to_numpy(zero_copy_only=False))
  return int(hits[0]) if len(hits) else None


def _text(column: pa.ChunkedArray) -> pa.ChunkedArray:
  if pa.types.is_string(column.type) or pa.types.is_large_string(column.type):
    return column
  return column.cast(pa.string())


def _blank(text: pa.ChunkedArray):
  return pc.fill_null(pc.equal(pc.utf8_trim_whitespace(text), ""), True)


def _ids(file: _File, column: pa.ChunkedArray, field: str, name: str) -> np.ndarray:
  """int64 when every id is an integer (an integer column, or text of plain integers), else str."""
  if pa.types.is_dictionary(column.type):
    column = column.cast(column.type.value_type)
  kind = column.type
  if pa.types.is_integer(kind) or pa.types.is_floating(kind):
    missing = pc.is_null(column, nan_is_null=True)
  else:
    column = _text(column)
    missing = _blank(column)
  row = _first(missing)
  if row is not None:
    raise UserError(f"{file.where(row)}: empty {field} id in column {name!r}. Every event "
                    f"needs a {field}; fill it in or delete the line.")
  if pa.types.is_integer(kind):
    return column.cast(pa.int64()).to_numpy()
  if pa.types.is_floating(kind):
    if pc.all(pc.equal(pc.floor(column), column)).as_py():  # integers stored as floats
      return column.cast(pa.int64()).to_numpy()
    column = column.cast(pa.string())
  if pc.all(pc.match_substring_regex(column, _INTEGER_ID)).as_py():
    try:
      return column.cast(pa.int64()).to_numpy()
    except pa.ArrowInvalid:
      pass  # beyond int64: keep the text
  return column.to_numpy(zero_copy_only=False).astype(str)


def _first_failure(values: pa.ChunkedArray, convert) -> int | None:
  """Index of the first value `convert` rejects, by bisection: about 2n work, error path only."""
  try:
    convert(values)
    return None
  except (pa.ArrowInvalid, ValueError):
    pass
  lo, hi = 0, len(values)  # values[lo:hi] holds a failure
  while hi - lo > 1:
    mid = (lo + hi) // 2
    try:
      convert(values[lo:mid])
      lo = mid
    except (pa.ArrowInvalid, ValueError):
      hi = mid
  return lo


def _iso_seconds(zone: str | None):
  """ISO-8601 text -> Unix seconds. Nanoseconds, because Arrow refuses to parse more fractional
  digits than the unit holds; they cover the years 1678 to 2261, plenty for event logs."""
  def convert(text):
    nanos = text.cast(pa.timestamp("ns", tz=zone)).cast(pa.int64()).to_numpy()
    return np.floor_divide(nanos, 1_000_000_000)
  return convert


def _timestamps(file: _File, column: pa.ChunkedArray, name: str) -> np.ndarray:
  """Unix seconds (int64) from integers, floats, timestamps, dates or text of any of these."""
  kind = column.type
  if pa.types.is_dictionary(kind):
    column, kind = column.cast(kind.value_type), kind.value_type
  numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
  if numeric or pa.types.is_timestamp(kind) or pa.types.is_date(kind):
    row = _first(pc.is_null(column, nan_is_null=True))
    if row is not None:
      raise UserError(f"{file.where(row)}: empty timestamp in column {name!r}. Every event needs "
                      "a time; fill it in or delete the line.")
    if pa.types.is_integer(kind):
      return column.cast(pa.int64()).to_numpy()
    if pa.types.is_floating(kind):
      return np.floor(column.to_numpy()).astype(np.int64)
    if pa.types.is_date(kind):
      column = column.cast(pa.timestamp("s"))
    # A timestamp column stores UTC instants whatever its zone: its int64 value is what we want.
    return column.cast(pa.timestamp("s", tz=column.type.tz), safe=False).cast(
        pa.int64()).to_numpy()

  text = pc.utf8_trim_whitespace(_text(column))
  row = _first(_blank(text))
  if row is not None:
    raise UserError(f"{file.where(row)}: empty timestamp in column {name!r}. Every event needs "
                    "a time; fill it in or delete the line.")
  integer = pc.match_substring_regex(text, _INTEGER).to_numpy(zero_copy_only=False)
  number = pc.match_substring_regex(text, _NUMBER).to_numpy(zero_copy_only=False) & ~integer
  zoned = pc.match_substring_regex(text, _ZONED).to_numpy(zero_copy_only=False)
  iso = ~integer & ~number
  # Each value is parsed by its own form; a value that fits none fails its group's conversion.
  groups = ((integer, lambda t: t.cast(pa.int64()).to_numpy()),
            (number, lambda t: np.floor(t.cast(pa.float64()).to_numpy()).astype(np.int64)),
            (iso & zoned, _iso_seconds("UTC")),
            (iso & ~zoned, _iso_seconds(None)))
  seconds = np.empty(len(text), np.int64)
  failures = []
  for mask, convert in groups:
    rows = np.flatnonzero(mask)
    if not len(rows):
      continue
    subset = text.take(pa.array(rows))
    bad = _first_failure(subset, convert)
    if bad is None:
      seconds[rows] = convert(subset)
    else:
      failures.append(int(rows[bad]))
  if failures:
    row = min(failures)
    raise UserError(
        f"{file.where(row)}: cannot read the timestamp {text[row].as_py()!r} in column "
        f"{name!r}. Write {_TIMESTAMP_FORMS}.")
  return seconds


def _values(file: _File, column: pa.ChunkedArray, name: str) -> np.ndarray:
  """float32; an empty cell means 1.0, as a missing value column does."""
  kind = column.type
  if pa.types.is_integer(kind) or pa.types.is_floating(kind) or pa.types.is_boolean(kind):
    values = column.cast(pa.float64()).to_numpy(zero_copy_only=False).astype(np.float32)
    return np.where(np.isnan(values), np.float32(1.0), values)
  text = pc.utf8_trim_whitespace(_text(column))
  empty = _blank(text)
  row = _first(pc.and_(pc.invert(empty), pc.invert(pc.match_substring_regex(text, _NUMBER))))
  if row is not None:
    raise UserError(
        f"{file.where(row)}: value {text[row].as_py()!r} in column {name!r} is not a number. "
        "Write a number (a rating, a watch fraction) or leave the cell empty for 1.0; if this "
        "column isn't a value, map another with --columns value=<column>.")
  values = pc.if_else(empty, "1", text).cast(pa.float64())
  return values.to_numpy().astype(np.float32)


def _event_types(file: _File, column: pa.ChunkedArray, name: str) -> np.ndarray:
  names = _strings(column)
  known = {t.name.lower() for t in EventType}
  uniques, first_rows = np.unique(names, return_index=True)
  unknown = [row for row, value in zip(first_rows, uniques) if value.strip().lower() not in known]
  if unknown:  # checked here first, to name the line of the file's first bad row
    row = int(min(unknown))
    raise UserError(
        f"{file.where(row)}: unknown event type {str(names[row])!r} in column {name!r}. Known "
        f"types: {', '.join(sorted(known))}. Rename it in your data, map another column with "
        "--columns event=<column>, or map no event column to treat every row as an "
        "'interaction'.")
  return parse_event_types(names, f"{file.path}, column {name!r}")


def _strings(column: pa.ChunkedArray) -> np.ndarray:
  if pa.types.is_dictionary(column.type):
    column = column.cast(column.type.value_type)
  return pc.fill_null(_text(column), "").to_numpy(zero_copy_only=False).astype(str)


def _side_table(path: str, key: str, mapped: str, id_dtype: np.dtype,
                delimiter: str) -> SideTable:
  """Side features keyed by the first column, or by a column named `key` or `mapped` (the events
  file's column for the same ids). Every other column is a string feature; 'genres' is
  '|'-separated."""
  file = _File(path, f"{key}s file", delimiter)
  names = file.column_names()
  table = file.read(names) if names else None
  if table is None or table.num_rows == 0:
    raise UserError(f"{file.role} {path} contains no rows: give a header line and one {key} per "
                    f"line, or leave out --{key}s.")
  id_name = key if key in names else mapped if mapped in names else names[0]
  ids = _ids(file, table.column(id_name), key, id_name)
  if id_dtype == np.int64 and ids.dtype != np.int64:
    row = _first(pc.invert(pc.match_substring_regex(_text(table.column(id_name)), _INTEGER_ID)))
    raise UserError(
        f"{file.where(row or 0)}: {key} id {str(ids[row or 0])!r} in column {id_name!r} is not "
        f"an integer, but the event log's {key} ids are. The side table must use the same ids "
        "as the events.")
  if id_dtype != np.int64:
    ids = ids.astype(str)
  order = np.argsort(ids, kind="stable")
  repeats = np.flatnonzero(ids[order][1:] == ids[order][:-1])
  if len(repeats):
    first, second = sorted((int(order[repeats[0]]), int(order[repeats[0] + 1])))
    raise UserError(
        f"{file.where(second)}: {key} id {ids[second].item()!r} appears again (first at "
        f"{file.line(first)}). Give each {key} one line.")
  columns = {n: _strings(table.column(n)) for n in names if n != id_name}
  return SideTable(ids=ids, columns=columns,
                   multi_valued=("genres",) if "genres" in columns else ())
