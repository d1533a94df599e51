"""Why a CSV file cannot be read, worded for the person who has to fix it.

pyarrow reports a compressed file as garbled column names, a line longer than its block as
"straddling object straddles two block boundaries (try to increase block size?)", and bytes that
are not UTF-8 as "column #1" counted from 0 without a line. These functions find the file's own
line, column and problem, and raise a UserError that says which flag or conversion fixes it. The
scans run only once reading has failed, so they may read the whole file.
"""

from __future__ import annotations

import contextlib
import csv
import io

import numpy as np

from jaxrec.errors import UserError

MB = 1 << 20
DEFAULT_BLOCK_MB = 1  # pyarrow's own default block

# Leading bytes of what people pass as .csv by mistake, and what to do about each.
_SIGNATURES = (
    (b"\x1f\x8b", "gzip-compressed", "decompress it first (gzip -dk FILE) and pass the .csv"),
    (b"PK\x03\x04", "a zip archive", "unzip it and pass the .csv inside"),
    (b"BZh", "bzip2-compressed", "decompress it first (bzip2 -dk FILE)"),
    (b"\xfd7zXZ\x00", "xz-compressed", "decompress it first (xz -dk FILE)"),
    (b"\x28\xb5\x2f\xfd", "zstd-compressed", "decompress it first (zstd -d FILE)"),
    (b"PAR1", "a Parquet file", "name it .parquet and pass --dataset parquet"),
    (b"\xff\xfe", "UTF-16 text", "save it as UTF-8 (iconv -f utf-16 -t utf-8 FILE > NEW.csv)"),
    (b"\xfe\xff", "UTF-16 text", "save it as UTF-8 (iconv -f utf-16 -t utf-8 FILE > NEW.csv)"),
)


def check_signature(path: str, role: str) -> None:
  with open(path, "rb") as f:
    start = f.read(8)
  for magic, what, fix in _SIGNATURES:
    if start.startswith(magic):
      raise UserError(f"{role} {path} is {what}, not CSV text: {fix}.")


@contextlib.contextmanager
def _field_limit(size: int):
  """The csv module refuses fields over 128 KiB ('field larger than field limit')."""
  previous = csv.field_size_limit(max(csv.field_size_limit(), size))
  try:
    yield
  finally:
    csv.field_size_limit(previous)


def header(path: str, role: str, delimiter: str, block_size: int) -> list[str]:
  """The first non-empty line's fields, read with the csv module's quoting rules (as pyarrow's).
  Reads at most one block: a first block without a line break is a file without them (or with a
  giant header), which the csv module would report as 'field larger than field limit'."""
  with open(path, "rb") as f:
    head = f.read(block_size)
    whole = not f.read(1)
  if not whole and b"\n" not in head and b"\r" not in head:
    too_long(path, role, *first_long_line(path, block_size), block_size)
  text = head.decode("utf-8-sig", errors="replace")
  try:
    with _field_limit(len(text) + 1):
      row = next((r for r in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter) if r), [])
  except csv.Error as e:
    raise UserError(f"{role} {path}, line 1: cannot read the header ({e}). Give the file a "
                    f"header line of column names separated by {delimiter!r}.")
  if any("\n" in name or "\r" in name for name in row):
    raise UserError(f"{role} {path}, line 1: a quote (\") in the header opens a column name that "
                    "does not close on that line. Close or remove it.")
  return row


def too_long(path: str, role: str, line: int, length: int, block_size: int) -> None:
  suggested = int(np.ceil(length / MB)) * 2
  raise UserError(
      f"{role} {path}, line {line}: {_size(length)} on one line, more than the CSV reader's "
      f"block of {_size(block_size)}. A line that long usually means line breaks are missing "
      "(the file needs one event per line) or a quote (\") opens a value that never closes: "
      "fix the file. If the line is right, pass "
      f"--block-size-mb {suggested} (block_size_mb in a config's data section).")


def _size(n: int) -> str:
  return f"{n / MB:.1f} MB" if n >= MB else f"{n / 1024:.0f} KB"


def first_long_line(path: str, block_size: int) -> tuple[int, int]:
  """(line number, length in bytes) of the first line longer than `block_size`; (0, 0) if none.
  Lines end at \n, \r\n or a lone \r, as for pyarrow."""
  line, length = 1, 0  # the line being read and its bytes so far
  with open(path, "rb") as f:
    while chunk := f.read(64 * MB):
      if chunk.endswith(b"\r"):
        chunk += f.read(1)  # keep a \r\n in one chunk: one line break, not two
      data = np.frombuffer(chunk, np.uint8)
      lone_cr = (data == 13) & (np.append(data[1:], 0) != 10)
      ends = np.flatnonzero((data == 10) | lone_cr)
      lengths = np.diff(np.concatenate([[-1], ends])) - 1
      if len(ends):
        lengths[0] += length
        long = np.flatnonzero(lengths > block_size)
        if len(long):
          return line + int(long[0]), int(lengths[long[0]])
        line, length = line + len(ends), len(chunk) - int(ends[-1]) - 1
      else:
        length += len(chunk)
  return (line, length) if length > block_size else (0, 0)


def bad_utf8(path: str, role: str, names: list[str], delimiter: str, column: int | None) -> None:
  """Raises a UserError at the first line whose field `column` (0-based; any field when None)
  is not UTF-8, naming the column and the bytes; returns if there is none."""
  with open(path, "rb") as f, _field_limit(2**31 - 1):
    for number, raw in enumerate(f, start=1):
      try:
        raw.decode("utf-8")
        continue
      except UnicodeDecodeError:
        pass
      # latin-1 maps each byte to one character, so each field's bytes come back exactly
      fields = next(csv.reader([raw.decode("latin-1").rstrip("\r\n")], delimiter=delimiter), [])
      for k, field in enumerate(fields):
        if column is not None and k != column:
          continue
        data = field.encode("latin-1")
        try:
          data.decode("utf-8")
        except UnicodeDecodeError as e:
          name = names[k] if k < len(names) else f"field {k + 1}"
          bad = data[max(e.start - 8, 0):e.end + 8]
          raise UserError(
              f"{role} {path}, line {number}, column {name!r}: {bad!r} is not UTF-8 text. Save "
              "the file as UTF-8 (from Windows-1252 or Latin-1: iconv -f cp1252 -t utf-8 FILE "
              "> NEW.csv).")
