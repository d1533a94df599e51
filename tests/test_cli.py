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
