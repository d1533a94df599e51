import datetime

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from jaxrec.data.events import EventType
from jaxrec.data.tabular import load_tabular, parse_column_mapping
from jaxrec.errors import UserError

T = 1700000000  # 2023-11-14T22:13:20Z


def write(tmp_path, name, text):
  path = tmp_path / name
  path.write_text(text)
  return str(path)


def error(call, *args, **kwargs) -> str:
  with pytest.raises(UserError) as e:
    call(*args, **kwargs)
  return str(e.value)


# --- good input ---

def test_csv_round_trip(tmp_path):
  path = write(tmp_path, "log.csv",
               "user,item,timestamp,event,value,device,locale\n"
               f"1,a7,{T},click,,phone,en-US\n"
               "2,b8,2023-11-14T22:13:20Z,Play,0.5,tv,\n"
               "3,a7,2023-11-14 23:13:21.9,rating,4,,de\n"
               f"1,c9,{T}.7,like,1e0,web,fr\n"
               "2,c9,2023-11-15T00:13:20+02:00,SHARE,2,tv,en\n"
               "3,b8,2023-11-14,skip,0,tv,en\n")
  raw = load_tabular(path)
  events = raw.events
  assert raw.name == "log" and len(events) == 6
  assert events.user.dtype == np.int64 and events.user.tolist() == [1, 2, 3, 1, 2, 3]
  assert events.item.dtype.kind == "U" and events.item.tolist() == ["a7", "b8", "a7", "c9", "c9",
                                                                    "b8"]
  assert events.timestamp.dtype == np.int64
  assert events.timestamp.tolist() == [T, T, T + 3601, T, T, 1699920000]
  assert events.event_type.tolist() == [EventType.CLICK, EventType.PLAY, EventType.RATING,
                                        EventType.LIKE, EventType.SHARE, EventType.SKIP]
  assert events.value.dtype == np.float32
  assert events.value.tolist() == [1.0, 0.5, 4.0, 1.0, 2.0, 0.0]  # an empty cell means 1.0
  assert events.device.tolist() == ["phone", "tv", "", "web", "tv", "tv"]
  assert events.locale.tolist() == ["en-US", "", "de", "fr", "en", "en"]
  assert len(raw.items.ids) == 0 and len(raw.users.ids) == 0


def test_optional_fields_default(tmp_path):
  path = write(tmp_path, "log.csv", f"user,item,timestamp\nu1,10,{T}\nu2,11,{T + 1}\n")
  events = load_tabular(path).events
  assert events.user.tolist() == ["u1", "u2"] and events.item.dtype == np.int64
  assert np.all(events.event_type == EventType.INTERACTION) and events.event_type.dtype == np.int8
  assert events.value.tolist() == [1.0, 1.0]
  assert events.device is None and events.locale is None


def test_ids_keep_their_spelling(tmp_path):
  """An id column is int64 only if every id is a plain integer: '007' must not become 7."""
  path = write(tmp_path, "log.csv", f"user,item,timestamp\n007,-5,{T}\n7,12,{T}\n")
  events = load_tabular(path).events
  assert events.user.tolist() == ["007", "7"]
  assert events.item.dtype == np.int64 and events.item.tolist() == [-5, 12]


def test_parquet(tmp_path):
  path = str(tmp_path / "log.parquet")
  pq.write_table(pa.table({
      "uid": pa.array([5, 6, 5], pa.int32()),
      "movie": ["m1", "m2", "m3"],
      "when": pa.array([datetime.datetime(2023, 11, 14, 22, 13, 20)] * 3, pa.timestamp("ms")),
      "action": pa.array(["play", "pause", "seek"]).dictionary_encode(),
      "rating": pa.array([0.25, None, 3.0]),
  }), path)
  raw = load_tabular(path, {"user": "uid", "item": "movie", "timestamp": "when",
                            "event": "action", "value": "rating"})
  events = raw.events
  assert raw.name == "log"
  assert events.user.dtype == np.int64 and events.user.tolist() == [5, 6, 5]
  assert events.item.tolist() == ["m1", "m2", "m3"]
  assert events.timestamp.tolist() == [T, T, T]
  assert events.event_type.tolist() == [EventType.PLAY, EventType.PAUSE, EventType.SEEK]
  assert events.value.tolist() == [0.25, 1.0, 3.0]


def test_parquet_text_timestamps(tmp_path):
  path = str(tmp_path / "log.pq")
  pq.write_table(pa.table({"user": ["a", "b"], "item": [1, 2],
                           "timestamp": [str(T), "2023-11-14T22:13:20"]}), path)
  assert load_tabular(path).events.timestamp.tolist() == [T, T]


def test_column_mapping_and_tsv(tmp_path):
  path = write(tmp_path, "log.tsv", f"uid\tmovie\tts\taction\n1\t2\t{T}\tclick\n")
  columns = parse_column_mapping("user=uid, item=movie,timestamp=ts,event=action,")
  assert columns == {"user": "uid", "item": "movie", "timestamp": "ts", "event": "action"}
  events = load_tabular(path, columns).events  # the default "," means tabs for a .tsv
  assert events.user.tolist() == [1] and events.event_type.tolist() == [EventType.CLICK]
  other = write(tmp_path, "log.txt", f"uid;movie;ts\n1;2;{T}\n")
  assert load_tabular(other, columns={"user": "uid", "item": "movie", "timestamp": "ts"},
                      delimiter=";").events.item.tolist() == [2]


def test_parse_column_mapping_errors():
  message = error(parse_column_mapping, "user=uid,item")
  assert "'item'" in message and "field=column" in message and "--columns user=uid" in message
  message = error(parse_column_mapping, "user=uid,rating=stars")
  assert "unknown field 'rating'" in message and "value" in message
  assert "twice" in error(parse_column_mapping, "user=a,user=b")
  assert "empty" in error(parse_column_mapping, " , ")
  assert "'rating'" in error(load_tabular, "x.csv", {"rating": "stars"})


def test_side_tables(tmp_path):
  events = write(tmp_path, "log.csv", f"uid,movie,timestamp\n1,10,{T}\n2,11,{T}\n")
  items = write(tmp_path, "items.csv",
                "title,movie,genres\nHeat,10,Action|Crime\nSabrina,11,Comedy|Romance\n"
                "Unseen,12,\n")
  users = str(tmp_path / "users.parquet")
  pq.write_table(pa.table({"id": [2, 1], "age": [25, None], "country": ["de", "fr"]}), users)
  raw = load_tabular(events, {"user": "uid", "item": "movie"}, items_path=items,
                     users_path=users)
  assert raw.items.ids.dtype == np.int64 and raw.items.ids.tolist() == [10, 11, 12]
  assert raw.items.columns["title"].tolist() == ["Heat", "Sabrina", "Unseen"]
  assert raw.items.columns["genres"].tolist() == ["Action|Crime", "Comedy|Romance", ""]
  assert raw.items.multi_valued == ("genres",)
  assert raw.users.ids.tolist() == [2, 1]  # the first column, for want of a "user" column
  assert raw.users.columns["age"].tolist() == ["25", ""]
  assert raw.users.columns["country"].tolist() == ["de", "fr"] and raw.users.multi_valued == ()


def test_side_table_errors(tmp_path):
  events = write(tmp_path, "log.csv", f"user,item,timestamp\n1,10,{T}\n")
  items = write(tmp_path, "items.csv", "item,title\n10,Heat\nx11,Sabrina\n")
  message = error(load_tabular, events, items_path=items)
  assert "items.csv, line 3" in message and "'x11'" in message and "not an integer" in message
  items = write(tmp_path, "items.csv", "item,title\n10,Heat\n11,Sabrina\n10,Heat again\n")
  message = error(load_tabular, events, items_path=items)
  assert "items.csv, line 4" in message and "line 2" in message and "appears again" in message
  users = write(tmp_path, "users.csv", "user,age\n")
  assert "users.csv contains no rows" in error(load_tabular, events, users_path=users)
  assert "users.json: unsupported extension" in error(load_tabular, events,
                                                      users_path=write(tmp_path, "users.json", "{}"))


# --- bad input: every message names the file, the line or column, and the fix ---

def test_missing_file(tmp_path):
  message = error(load_tabular, str(tmp_path / "nope.csv"))
  assert "nope.csv not found" in message and "Check the path" in message


def test_unsupported_extension(tmp_path):
  message = error(load_tabular, write(tmp_path, "log.json", "{}"))
  assert "log.json" in message and "'.json'" in message and ".csv" in message
  assert ".parquet" in message


def test_malformed_row(tmp_path):
  path = write(tmp_path, "log.csv", f"user,item,timestamp\n1,2,{T}\n\n4,5\n6,7,{T}\n")
  message = error(load_tabular, path)
  assert "log.csv, line 4" in message  # the empty line 3 counts, as in an editor
  assert "2 field(s) where the header has 3" in message and "'4,5'" in message
  assert "--delimiter" in message


def test_malformed_row_in_a_big_file(tmp_path):
  """Files over one block are parsed in parallel, where pyarrow doesn't know row numbers."""
  rows = [f"{u},{u % 97},{T + u}" for u in range(300_000)]
  rows[250_000] = "oops"
  path = write(tmp_path, "big.csv", "user,item,timestamp\n" + "\n".join(rows) + "\n")
  assert "big.csv, line 250002: 1 field(s)" in error(load_tabular, path)


def test_missing_required_column(tmp_path):
  path = write(tmp_path, "log.csv", f"uid,item,time\n1,2,{T}\n")
  message = error(load_tabular, path, {"user": "uid"})
  assert "log.csv" in message and "timestamp" in message
  assert "'uid', 'item', 'time'" in message  # the columns that exist
  assert "--columns user=uid,item=item,timestamp=<column>" in message
  message = error(load_tabular, path, {"user": "uid", "timestamp": "time", "event": "action"})
  assert "event" in message and "'action'" in message


@pytest.mark.parametrize("bad", ["yesterday", "2023-13-45", "17e", "2023-11-14 22:13 CET"])
def test_bad_timestamp(tmp_path, bad):
  path = write(tmp_path, "log.csv",
               f"user,item,timestamp\n1,2,{T}\n1,3,2023-11-14T22:13:20\n1,4,{bad}\n1,5,{T}\n")
  message = error(load_tabular, path)
  assert "log.csv, line 4" in message and repr(bad) in message and "ISO-8601" in message


def test_empty_timestamp(tmp_path):
  path = write(tmp_path, "log.csv", f"user,item,timestamp\n1,2,{T}\n1,3, \n")
  assert "log.csv, line 3: empty timestamp" in error(load_tabular, path)


def test_empty_file(tmp_path):
  assert "contains no events" in error(load_tabular, write(tmp_path, "log.csv", ""))
  message = error(load_tabular, write(tmp_path, "head.csv", "user,item,timestamp\n"))
  assert "head.csv" in message and "contains no events" in message
  path = str(tmp_path / "log.parquet")
  pq.write_table(pa.table({"user": pa.array([], pa.int64()), "item": pa.array([], pa.int64()),
                           "timestamp": pa.array([], pa.int64())}), path)
  assert "contains no events" in error(load_tabular, path)


@pytest.mark.parametrize("field, row", [("user", f",2,{T}"), ("item", f"1,  ,{T}")])
def test_empty_ids(tmp_path, field, row):
  path = write(tmp_path, "log.csv", f"user,item,timestamp\n1,2,{T}\n1,3,{T}\n{row}\n")
  message = error(load_tabular, path)
  assert f"log.csv, line 4: empty {field} id in column '{field}'" in message


def test_empty_id_in_parquet(tmp_path):
  path = str(tmp_path / "log.parquet")
  pq.write_table(pa.table({"user": [1, None], "item": ["a", "b"], "timestamp": [T, T]}), path)
  assert "log.parquet, row 2: empty user id" in error(load_tabular, path)


def test_unknown_event_type(tmp_path):
  path = write(tmp_path, "log.csv",
               f"user,item,timestamp,event\n1,2,{T},click\n1,3,{T},zap\n1,4,{T},buy\n")
  message = error(load_tabular, path)
  assert "log.csv, line 3" in message and "unknown event type 'zap'" in message
  assert "interaction" in message and "click" in message


def test_non_numeric_value(tmp_path):
  path = write(tmp_path, "log.csv",
               f"user,item,timestamp,value\n1,2,{T},4\n1,3,{T},\n1,4,{T},four\n")
  message = error(load_tabular, path)
  assert "log.csv, line 4" in message and "'four'" in message and "not a number" in message
  assert "--columns value=" in message


# --- timestamp units, and data that must not be dropped or invented silently (issue 23) ---

@pytest.mark.parametrize("unit, scale", [("milliseconds", 10**3), ("microseconds", 10**6),
                                         ("nanoseconds", 10**9)])
def test_epoch_units_are_detected_and_said(tmp_path, unit, scale):
  path = write(tmp_path, "log.csv",
               f"user,item,timestamp\n1,2,{T * scale}\n1,3,{(T + 5) * scale + scale // 2}\n")
  raw = load_tabular(path)
  assert raw.events.timestamp.tolist() == [T, T + 5]
  assert any(f"read as {unit} since 1970, from their size" in n for n in raw.notes)
  parquet = str(tmp_path / "log.parquet")
  pq.write_table(pa.table({"user": [1, 1], "item": [2, 3],
                           "timestamp": [T * scale, (T + 5) * scale]}), parquet)
  assert load_tabular(parquet).events.timestamp.tolist() == [T, T + 5]


def test_the_time_unit_can_be_given(tmp_path):
  relative = write(tmp_path, "rel.csv", "user,item,timestamp\n1,2,0\n1,3,90500.5\n")
  assert load_tabular(relative).events.timestamp.tolist() == [0, 90500]  # small: seconds
  raw = load_tabular(relative, time_unit="ms")
  assert raw.events.timestamp.tolist() == [0, 90]
  assert "read as milliseconds since 1970 (--time-unit ms)" in raw.notes[0]
  millis = write(tmp_path, "ms.csv", f"user,item,timestamp\n1,2,{T}\n1,3,{T * 1000}\n")
  message = error(load_tabular, millis, time_unit="s")
  assert "ms.csv, line 3" in message and "after the year 9999 read as seconds" in message
  assert "--time-unit" in message
  assert "unknown time unit 'sec'" in error(load_tabular, millis, time_unit="sec")


def test_negative_timestamps_are_refused_with_a_count(tmp_path):
  path = write(tmp_path, "log.csv",
               f"user,item,timestamp\n1,2,{T}\n1,3,-1\n1,4,1969-07-20T20:17:00Z\n")
  message = error(load_tabular, path)
  assert "log.csv, line 3: timestamp '-1'" in message and "before 1970 (2 row(s) are)" in message


def test_mixed_epoch_and_iso_timestamps_are_said(tmp_path):
  path = write(tmp_path, "log.csv",
               f"user,item,timestamp\n1,2,2023-11-14T22:13:20Z\n1,3,{T}\n1,4,{T}\n")
  raw = load_tabular(path)
  assert raw.events.timestamp.tolist() == [T, T, T]
  assert any("mixes timestamp forms: 2 epoch number(s) (first at line 3) and 1 ISO-8601" in n
             for n in raw.notes)


def test_exact_duplicate_rows_count_once(tmp_path):
  from jaxrec.data.prepare import prepare
  path = write(tmp_path, "log.csv",
               f"user,item,timestamp,event,value\n1,2,{T},rating,4\n1,3,{T},rating,5\n\n"
               f"1,2,{T},rating,4\n1,3,{T + 60},rating,5\n1,2,{T},rating,4\n")
  raw = load_tabular(path)
  assert len(raw.events) == 3 and raw.events.value.tolist() == [4, 5, 5]
  assert any("dropped 2 exact duplicate row(s)" in n and "line 5 repeats line 2" in n
             for n in raw.notes)
  ds = prepare(raw, str(tmp_path / "d"))  # the rating stays a 4, not 8 (nor 12)
  tokens = ds.user_tokens([2])[0]
  item2 = int(ds.vocabs["item"].lookup(np.array([2]))[0])
  assert tokens["value"][tokens["item"] == item2].tolist() == [4.0]
  assert any("exact duplicate" in n for n in ds.manifest["notes"])


def test_side_table_ids_without_events(tmp_path):
  events = write(tmp_path, "log.csv", f"user,item,timestamp\n1,a,{T}\n2,b,{T}\n")
  items = write(tmp_path, "items.csv", "item,genre\na,x\nb,y\nz,w\n")
  users = write(tmp_path, "users.csv", "user,age\n1,30\n7,40\n")
  raw = load_tabular(events, items_path=items, users_path=users)
  assert any("items.csv: 1 of 3 item id(s) have no event (the first, 'z', at line 4); kept in "
             "the catalogue" in n for n in raw.notes)
  assert any("users.csv: 1 of 2 user id(s) have no event" in n and "not used" in n
             for n in raw.notes)
  wrong = write(tmp_path, "wrong.csv", "item,genre\nA,x\nB,y\n")
  message = error(load_tabular, events, items_path=wrong)
  assert "wrong.csv: none of its 2 item id(s) is a item of the events" in message
  assert "'A'" in message and "'a'" in message


# --- files pyarrow reports badly (issue 23) ---

def test_compressed_and_binary_files_passed_as_csv(tmp_path):
  import gzip
  import zipfile
  path = tmp_path / "log.csv"
  path.write_bytes(gzip.compress(f"user,item,timestamp\n1,2,{T}\n".encode()))
  message = error(load_tabular, str(path))
  assert "log.csv is gzip-compressed, not CSV text" in message and "gzip -dk" in message
  with zipfile.ZipFile(path, "w") as z:
    z.writestr("log.csv", "user,item,timestamp\n")
  assert "is a zip archive" in error(load_tabular, str(path))
  pq.write_table(pa.table({"user": [1]}), str(path))
  assert "is a Parquet file" in error(load_tabular, str(path))


def test_bytes_that_are_not_utf8_are_named_by_line_and_column(tmp_path):
  path = tmp_path / "log.csv"
  path.write_bytes(f"user,title,item,timestamp\n1,ok,a,{T}\n1,caf\xe9,b,{T}\n2,x,b\xe9,{T}\n"
                   .encode("latin-1"))  # the unread column 'title' does not count
  message = error(load_tabular, str(path))
  assert "log.csv, line 4, column 'item': b'b\\xe9' is not UTF-8" in message
  assert "iconv" in message and "#" not in message


def test_a_line_longer_than_the_block(tmp_path):
  rows = [f"{u},{u % 7},{T + u},-" for u in range(100)]
  rows[60] = f"1,2,{T},{'x' * 50_000}"
  path = write(tmp_path, "log.csv", "user,item,timestamp,note\n" + "\n".join(rows) + "\n")
  message = error(load_tabular, path, block_size_mb=0.01)
  assert "log.csv, line 62: 49 KB on one line" in message and "block of 10 KB" in message
  assert "--block-size-mb 2" in message and "line breaks" in message
  assert len(load_tabular(path, block_size_mb=0.1).events) == 100


def test_a_file_without_line_breaks(tmp_path):
  """A one-line file: the csv module said 'field larger than field limit' with a traceback."""
  path = write(tmp_path, "log.csv", "user;item;timestamp;" + "1;2;3;" * 5000)
  message = error(load_tabular, path, block_size_mb=0.01)
  assert "log.csv, line 1: 29 KB on one line" in message and "line breaks" in message
  message = error(load_tabular, write(tmp_path, "one.csv", "x" * 200_000))  # under one block
  assert "no column for the user" in message and len(message) < 1000
  message = error(load_tabular, write(tmp_path, "quote.csv", f'user,"item,timestamp\n1,2,{T}\n'))
  assert "quote.csv, line 1: a quote" in message


def test_a_long_malformed_line_is_shortened_in_the_message(tmp_path):
  path = write(tmp_path, "log.csv", f"user,item,timestamp\n1,2,{T}\n{'y' * 100_000}\n")
  message = error(load_tabular, path)
  assert "log.csv, line 3" in message and "(100000 chars)" in message and len(message) < 800


def test_exact_duplicates_with_and_without_hints():
  from jaxrec.data.duplicates import exact_duplicates
  rng = np.random.default_rng(0)
  users, times = rng.integers(0, 5, 400), rng.integers(0, 8, 400)
  notes = rng.choice(["a", "b", None], 400)
  table = pa.table({"user": users.astype(str), "timestamp": times, "note": notes})
  seen, truth = {}, ([], [])
  for row, key in enumerate(zip(users.tolist(), times.tolist(), notes.tolist())):
    if key in seen:
      truth[0].append(row)
      truth[1].append(seen[key])
    seen.setdefault(key, row)
  for hints in ([], [times], [times, users]):
    rows, firsts = exact_duplicates(table, hints)
    assert rows.tolist() == truth[0] and firsts.tolist() == truth[1]
