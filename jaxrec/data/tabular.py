"""A user's own event log from a CSV or Parquet file, with optional item and user side tables.

Every mistake in the file becomes a `UserError` that names the file, the line (CSV, counting the
header as line 1) or row (Parquet) and the column, and says how to fix it: a log that fails
halfway through preparation with a pyarrow traceback is the worst first experience we can give.

CSV columns are read as text and typed here, not by pyarrow's inference, so that ids keep their
exact spelling ("007" stays a string; an id column is int64 only when every id is a plain
integer) and a bad value can be reported with its line instead of as a failed conversion.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from jaxrec.data import csv_problems, time_units
from jaxrec.data.duplicates import exact_duplicates
from jaxrec.data.events import EventLog, EventType, RawDataset, SideTable, parse_event_types
from jaxrec.errors import UserError

FIELDS = ("user", "item", "timestamp", "event", "value", "device", "locale")
REQUIRED = ("user", "item", "timestamp")
CSV_EXTENSIONS = (".csv", ".tsv", ".txt")
PARQUET_EXTENSIONS = (".parquet", ".pq")
MAPPING_SYNTAX = "--columns user=uid,item=movie,timestamp=ts"
MAX_ID_LENGTH = 1024

_INTEGER_ID = r"^-?(0|[1-9][0-9]*)$"  # ids that survive a round trip through int64 unchanged
_INTEGER = r"^[+-]?[0-9]+$"
_NUMBER = r"^[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?$"
# A time of day followed by a zone ("Z", "+02:00", "-0500"): such strings parse only as zoned.
_ZONED = r"[0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]*)?)?([Zz]|[+-][0-9]{2}(:?[0-9]{2})?)$"
_TIMESTAMP_FORMS = ("Unix seconds (1700000000 or 1700000000.5; milliseconds, microseconds or "
                    "nanoseconds with --time-unit) or an ISO-8601 date-time (2023-11-14, "
                    "2023-11-14T22:13:20 or 2023-11-14T22:13:20+01:00)")


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
                 items_path: str | None = None, users_path: str | None = None,
                 time_unit: str | None = None, block_size_mb: float | None = None) -> RawDataset:
  """Reads an event log. `columns` maps our field names to the file's column names; a field it
  leaves out is looked for under its own name. user, item and timestamp are required; without an
  event column every row is an INTERACTION, without a value column every value is 1.0.

  `time_unit` ("s", "ms", "us", "ns") says what epoch numbers count; None detects it from their
  size. `block_size_mb` is the CSV reader's block, which must hold the longest line (default 1).
  What was assumed or dropped is in the result's `notes` (exact duplicate rows are dropped)."""
  mapping = _check_mapping(columns or {})
  time_units.check_unit(time_unit)
  log = _File(path, "events file", delimiter, block_size_mb)
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
        f"{_some(names)}. Say which column holds each field with --columns "
        f"(columns={{...}} in Python), e.g. --columns {example}")
  table = log.read(list(dict.fromkeys(used.values())))
  if table.num_rows == 0:
    raise UserError(f"{path} has a header but contains no events: add one event per line.")

  notes = []
  user = _ids(log, table.column(used["user"]), "user", used["user"])
  item = _ids(log, table.column(used["item"]), "item", used["item"])
  events = EventLog(
      user=user,
      item=item,
      timestamp=_timestamps(log, table.column(used["timestamp"]), used["timestamp"], time_unit,
                            notes),
      event_type=(_event_types(log, table.column(used["event"]), used["event"])
                  if "event" in used else
                  np.full(table.num_rows, EventType.INTERACTION, np.int8)),
      value=(_values(log, table.column(used["value"]), used["value"]) if "value" in used
             else np.ones(table.num_rows, np.float32)),
      device=_strings(table.column(used["device"])) if "device" in used else None,
      locale=_strings(table.column(used["locale"])) if "locale" in used else None)
  repeats, firsts = exact_duplicates(table, [events.timestamp, events.event_type, events.value] +
                                     [ids for ids in (user, item) if ids.dtype == np.int64])
  if len(repeats):
    events = events.take(np.setdiff1d(np.arange(len(events)), repeats))
    first_line, repeat_line = log.lines([int(firsts[0]), int(repeats[0])])
    notes.append(
        f"{log.role} {path}: dropped {len(repeats)} exact duplicate row(s), each identical in "
        f"every column read to an earlier row (the first: {repeat_line} repeats {first_line}), "
        "so that each event counts once. If repeated rows are real repeated events, give each "
        "its own timestamp.")
  items = (_side_table(items_path, "item", used["item"], events.item, delimiter, notes)
           if items_path else SideTable.empty())
  users = (_side_table(users_path, "user", used["user"], events.user, delimiter, notes)
           if users_path else SideTable.empty())
  name = os.path.basename(path)
  return RawDataset(name[:name.rfind(".")], events, items, users, notes=notes)


def _some(names: list[str], most: int = 30, width: int = 60) -> str:
  """Column names for a message: a header that is really a whole file must not fill the screen."""
  shown = [repr(n) if len(n) <= width else repr(n[:width]) + "..." for n in names[:most]]
  return ", ".join(shown) + (f", ... ({len(names)} columns)" if len(names) > most else "")


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

  def __init__(self, path: str, role: str, delimiter: str = ",",
               block_size_mb: float | None = None):
    self.path, self.role = path, role
    block_size_mb = csv_problems.DEFAULT_BLOCK_MB if block_size_mb is None else block_size_mb
    if not block_size_mb > 0:
      raise UserError(f"--block-size-mb must be a positive number of MB, got {block_size_mb}.")
    self.block_size = int(block_size_mb * csv_problems.MB)
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
    if self.csv:
      csv_problems.check_signature(path, role)

  def column_names(self) -> list[str]:
    if not self.csv:
      try:
        return pq.read_schema(self.path).names
      except (pa.ArrowInvalid, OSError) as e:
        raise UserError(f"{self.role} {self.path} is not a readable Parquet file ({e}). "
                        "Check that it was written completely, or export it again.")
    return csv_problems.header(self.path, self.role, self.delimiter, self.block_size)

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
          read_options=pacsv.ReadOptions(use_threads=threads, block_size=self.block_size),
          parse_options=pacsv.ParseOptions(delimiter=self.delimiter,
                                           invalid_row_handler=on_invalid),
          convert_options=pacsv.ConvertOptions(
              column_types={n: pa.string() for n in self.column_names()},
              include_columns=names))
    except pa.ArrowException as e:
      if not invalid:
        self._explain(e)
      row = invalid[0]
      if row.number is None:  # parallel parsing doesn't know row numbers: find it on one thread
        return self.read(names, threads=False)
      text = row.text if len(row.text) <= 200 else f"{row.text[:200]}... ({len(row.text)} chars)"
      raise UserError(
          f"{self.role} {self.path}, line {self._physical_line(row.number)}: "
          f"{row.actual_columns} field(s) where the header has {row.expected_columns}: "
          f"{text!r}. Fix or delete that line (quote a value that contains "
          f"{self.delimiter!r}); if the file uses another separator, pass --delimiter.")

  def _explain(self, error: Exception) -> None:
    """Raises a UserError naming the line and the fix for what pyarrow reported as `error`."""
    message = str(error)
    if "straddle" in message:  # a line longer than the block
      line, length = csv_problems.first_long_line(self.path, self.block_size)
      if line:
        csv_problems.too_long(self.path, self.role, line, length, self.block_size)
    if "UTF8" in message or "UTF-8" in message:
      column = re.search(r"column #(\d+)", message)  # counted from 0
      csv_problems.bad_utf8(self.path, self.role, self.column_names(), self.delimiter,
                            int(column.group(1)) if column else None)
    raise UserError(f"{self.role} {self.path} cannot be read as CSV: {message}. If it is not "
                    "UTF-8 text, save it as UTF-8; if it uses another field separator, "
                    f"pass --delimiter (now {self.delimiter!r}).")

  def where(self, row: int) -> str:
    """'events file FILE, line N' for the 0-based data row `row`."""
    return f"{self.role} {self.path}, {self.line(row)}"

  def line(self, row: int) -> str:
    """'line N' (CSV, the header is line 1) or 'row N' (Parquet) for the 0-based data row."""
    return self.lines([row])[0]

  def lines(self, rows: list[int]) -> list[str]:
    """line() of several rows, in one scan of the file."""
    if not self.csv:
      return [f"row {row + 1}" for row in rows]
    return [f"line {n}" for n in self._physical_lines([row + 2 for row in rows])]

  def _physical_line(self, number: int) -> int:
    return self._physical_lines([number])[0]

  def _physical_lines(self, numbers: list[int]) -> list[int]:
    """pyarrow numbers rows skipping empty lines (header = 1); a message wants the line number
    an editor shows. Only called to word a message, so a scan of the file is fine."""
    wanted, found, seen = set(numbers), {}, 0
    with open(self.path, "rb") as f:
      for line_number, line in enumerate(f, start=1):
        if line.strip(b"\r\n"):
          seen += 1
          if seen in wanted:
            found[seen] = line_number
            if len(found) == len(wanted):
              break
    return [found.get(n, n) for n in numbers]


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
  if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
    row = _first(pc.greater(pc.utf8_length(column), MAX_ID_LENGTH))
    if row is not None:  # as a numpy str array, one such id would make every id that long
      raise UserError(f"{file.where(row)}: the {field} id in column {name!r} is "
                      f"{len(column[row].as_py())} characters long. Ids are short keys (at most "
                      f"{MAX_ID_LENGTH}): map the column that holds them with --columns "
                      f"{field}=<column>, or fix that line.")
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


def _timestamps(file: _File, column: pa.ChunkedArray, name: str, unit: str | None,
                notes: list[str]) -> np.ndarray:
  """Unix seconds (int64) from epoch numbers (in `unit`; detected from their size when None),
  timestamps, dates, or text of any of these."""
  kind = column.type
  if pa.types.is_dictionary(kind):
    column, kind = column.cast(kind.value_type), kind.value_type
  numeric = pa.types.is_integer(kind) or pa.types.is_floating(kind)
  if numeric or pa.types.is_timestamp(kind) or pa.types.is_date(kind):
    row = _first(pc.is_null(column, nan_is_null=True))
    if row is not None:
      raise UserError(f"{file.where(row)}: empty timestamp in column {name!r}. Every event needs "
                      "a time; fill it in or delete the line.")
    if numeric:
      epoch = column.cast(pa.int64() if pa.types.is_integer(kind) else pa.float64()).to_numpy()
      unit = _epoch_unit(file, name, unit, [epoch], notes)
      return _checked(file, column, name, time_units.to_seconds(epoch, unit), unit)
    if pa.types.is_date(kind):
      column = column.cast(pa.timestamp("s"))
    # A timestamp column stores UTC instants whatever its zone: its int64 value is what we want.
    seconds = column.cast(pa.timestamp("s", tz=column.type.tz), safe=False).cast(
        pa.int64()).to_numpy()
    return _checked(file, column, name, seconds, None)

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
            (number, lambda t: t.cast(pa.float64()).to_numpy()),
            (iso & zoned, _iso_seconds("UTC")),
            (iso & ~zoned, _iso_seconds(None)))
  parsed, failures = [], []
  for mask, convert in groups:
    rows = np.flatnonzero(mask)
    subset = text.take(pa.array(rows))
    bad = _first_failure(subset, convert) if len(rows) else None
    if bad is None:
      parsed.append((rows, convert(subset) if len(rows) else np.zeros(0, np.int64)))
    else:
      failures.append(int(rows[bad]))
  if failures:
    row = min(failures)
    raise UserError(
        f"{file.where(row)}: cannot read the timestamp {text[row].as_py()!r} in column "
        f"{name!r}. Write {_TIMESTAMP_FORMS}.")
  epoch = integer | number
  if epoch.any() and iso.any():  # two exports pasted together? Say so rather than guess quietly
    notes.append(
        f"{file.role} {file.path}: column {name!r} mixes timestamp forms: {int(epoch.sum())} "
        f"epoch number(s) (first at {file.line(int(np.argmax(epoch)))}) and {int(iso.sum())} "
        f"ISO-8601 date-time(s) (first at {file.line(int(np.argmax(iso)))}); each was read by "
        "its own form.")
  seconds = np.empty(len(text), np.float64)  # exact for every second up to the year 9999
  unit = _epoch_unit(file, name, unit, [values for _, values in parsed[:2]], notes) if (
      epoch.any()) else None
  for k, (rows, values) in enumerate(parsed):
    seconds[rows] = time_units.to_seconds(values, unit) if k < 2 else values
  return _checked(file, text, name, seconds, unit)


def _epoch_unit(file: _File, name: str, unit: str | None, epochs: list[np.ndarray],
                notes: list[str]) -> str:
  """The given unit, else the one the largest value implies; either way, a note says which."""
  read_as = f"{file.role} {file.path}: timestamps in column {name!r} read as"
  if unit:
    notes.append(f"{read_as} {time_units.NAMES[unit]} since 1970 (--time-unit {unit}).")
    return unit
  largest = max(float(np.abs(e).max()) for e in epochs if len(e))
  unit = time_units.detect(largest)
  notes.append(f"{read_as} {time_units.NAMES[unit]} since 1970, from their size (the largest is "
               f"{largest:.0f}); if that is wrong, pass --time-unit s, ms, us or ns.")
  return unit


def _checked(file: _File, column: pa.ChunkedArray, name: str, seconds: np.ndarray,
             unit: str | None) -> np.ndarray:
  """`seconds` as int64, after refusing times before 1970 and after the year 9999."""
  negative, too_late, count = time_units.first_out_of_range(seconds)
  if negative is not None:
    raise UserError(
        f"{file.where(negative)}: timestamp {column[negative].as_py()!r} in column {name!r} is "
        f"before 1970 ({count} row(s) are). A negative time is usually a placeholder for a "
        "missing one: fix or delete those lines.")
  if too_late is not None:
    read_as = f" read as {time_units.NAMES[unit]}" if unit else ""
    raise UserError(
        f"{file.where(too_late)}: timestamp {column[too_late].as_py()!r} in column {name!r} is "
        f"after the year 9999{read_as}. Pass --time-unit with the column's unit (s, ms, us or "
        "ns since 1970).")
  return seconds.astype(np.int64)


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


def _side_table(path: str, key: str, mapped: str, event_ids: np.ndarray, delimiter: str,
                notes: list[str]) -> SideTable:
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
  id_dtype = event_ids.dtype
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
  _check_ids_match(file, ids, event_ids, key, id_name, notes)
  columns = {n: _strings(table.column(n)) for n in names if n != id_name}
  return SideTable(ids=ids, columns=columns,
                   multi_valued=("genres",) if "genres" in columns else ())


def _check_ids_match(file: _File, ids: np.ndarray, event_ids: np.ndarray, key: str, id_name: str,
                     notes: list[str]) -> None:
  """Refuses a side table none of whose ids is in the events (keyed by something else); counts
  the ids that are not, in a note: items stay as catalogue items without interactions (cold
  start), users without events are not used."""
  unmatched = np.flatnonzero(~np.isin(ids, event_ids))
  if len(unmatched) == len(ids):
    raise UserError(
        f"{file.role} {file.path}: none of its {len(ids)} {key} id(s) is a {key} of the events "
        f"(its first, {ids[0].item()!r} in column {id_name!r}; the events have e.g. "
        f"{event_ids[0].item()!r}). A side table must be keyed by the same ids as the events: "
        f"check its id column (named {key!r} or as in the events, else its first) and how the "
        "ids are spelt.")
  if len(unmatched):
    fate = ("kept in the catalogue as items without interactions (cold start)" if key == "item"
            else "their rows are not used")
    notes.append(
        f"{file.role} {file.path}: {len(unmatched)} of {len(ids)} {key} id(s) have no event "
        f"(the first, {ids[unmatched[0]].item()!r}, at {file.line(int(unmatched[0]))}); {fate}.")
