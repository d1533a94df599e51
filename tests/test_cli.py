import json
import os
import subprocess
import sys

import pytest

from jaxrec import cli


def _jaxrec(*args, env=None):
  return subprocess.run([sys.executable, "-m", "jaxrec.cli", *args], capture_output=True,
                        text=True, env={**os.environ, **(env or {})})


def test_prepare_stats_and_show(tmp_path, data_dir, capsys):
  out = str(tmp_path / "ml")
  assert cli.main(["data", "prepare", "--dataset", "movielens-100k", "--out", out,
                   "--data-dir", data_dir]) == 0
  capsys.readouterr()
  assert cli.main(["data", "stats", out, "--json"]) == 0
  stats = json.loads(capsys.readouterr().out)
  assert (stats["users"], stats["items"], stats["interactions"]) == (943, 1682, 100000)
  assert cli.main(["data", "show", out, "--users", "2", "--tokens", "3"]) == 0
  shown = capsys.readouterr().out
  assert shown.count("user ") == 2 and "rating" in shown and "test" in shown


@pytest.mark.integration
def test_user_errors_exit_2_without_traceback(tmp_path):
  result = _jaxrec("data", "prepare", "--dataset", "nope", "--out", str(tmp_path / "x"))
  assert result.returncode == 2
  assert "unknown dataset 'nope'" in result.stderr and "Traceback" not in result.stderr
  result = _jaxrec("data", "stats", str(tmp_path / "missing"))
  assert result.returncode == 2 and "jaxrec data prepare" in result.stderr
  result = _jaxrec("data", "prepare", "--dataset", "csv", "--out", str(tmp_path / "y"),
                   "--path", str(tmp_path / "absent.csv"))
  assert result.returncode == 2 and "absent.csv" in result.stderr
  assert "Traceback" not in result.stderr


def test_prepare_of_a_bad_or_unusual_csv(tmp_path, capsys):
  """Issue 23: each says what it assumed, or exits 2 with the file, the line and the fix."""
  import gzip
  log = tmp_path / "log.csv"
  log.write_text("user,item,timestamp\n1,2,1700000000000\n1,3,1700000100000\n2,3,1700000200000\n")
  out = str(tmp_path / "out")
  assert cli.main(["data", "prepare", "--dataset", "csv", "--path", str(log), "--out", out]) == 0
  assert "read as milliseconds since 1970" in capsys.readouterr().out
  assert cli.main(["data", "prepare", "--dataset", "csv", "--path", str(log), "--out", out,
                   "--overwrite", "--time-unit", "s"]) == 2
  err = capsys.readouterr().err
  assert "log.csv, line 2" in err and "--time-unit" in err and "Traceback" not in err
  gz = tmp_path / "gz.csv"
  gz.write_bytes(gzip.compress(log.read_bytes()))
  assert cli.main(["data", "prepare", "--dataset", "csv", "--path", str(gz), "--out", out]) == 2
  assert "gzip-compressed" in capsys.readouterr().err
  long = tmp_path / "long.csv"
  long.write_text("user,item,timestamp,note\n" + "2,3,1700000000,-\n" * 1000
                  + "1,2,1700000000," + "x" * 20_000 + "\n")
  assert cli.main(["data", "prepare", "--dataset", "csv", "--path", str(long), "--out", out,
                   "--block-size-mb", "0.01"]) == 2
  assert "long.csv, line 1002" in capsys.readouterr().err
