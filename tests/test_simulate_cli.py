import json
import os
import shutil

import pytest

from jaxrec import cli
from jaxrec.config import apply_overrides, load_config
from jaxrec.data.storage import PreparedDataset
from jaxrec.eval.simulation.log import read_log
from jaxrec.train.export import export_workdir
from jaxrec.train.trainer import train

WORLD = ["data.dataset=synthetic", "data.split=temporal", "data.synthetic.num_users=120",
         "data.synthetic.num_items=300", "data.synthetic.num_events=6000",
         "data.synthetic.seed=4"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
  tmp = tmp_path_factory.mktemp("simulate")
  data = [*WORLD, f"data.dir={tmp / 'data'}", "train.eval_every=6"]  # one evaluation
  for name, config in (("two_tower", "synthetic_two_tower.py:smoke"),
                       ("dlrm", "synthetic_dlrm.py:smoke")):
    train(apply_overrides(load_config(f"configs/{config}"), data), str(tmp / name))
  export_workdir(str(tmp / "two_tower"), str(tmp / "export"), ranker=str(tmp / "dlrm"))
  return tmp


def run(argv, capsys):
  code = cli.main(argv)
  out = capsys.readouterr()
  return code, out.out, out.err


def test_prepare_records_the_synthetic_config(bundle):
  manifest = PreparedDataset(str(bundle / "data")).manifest
  assert manifest["source_config"]["num_users"] == 120
  assert manifest["source_config"]["seed"] == 4


@pytest.fixture(scope="module")
def logged(bundle, tmp_path_factory):
  """A two-day log of a Plackett-Luce logging policy: (directory, stdout)."""
  out = tmp_path_factory.mktemp("log")
  code = cli.main(["simulate", "--policy", str(bundle / "export"), "--days", "2", "--users", "40",
                   "--k", "3", "--temperature", "0.5", "--candidates", "8", "--out", str(out),
                   "--log"])
  assert code == 0
  return out


def test_simulate_and_ope(bundle, logged, tmp_path, capsys):
  out = logged
  result = json.loads((out / "simulation.json").read_text())
  assert [d["day"] for d in result["days"]] == [1, 2]
  assert result["days"][0]["active_users"] == 40
  assert os.path.getsize(out / "days.png") > 1000
  meta, columns = read_log(str(out))
  assert meta["k"] == 3 and meta["users"] == 40
  assert len(columns["item"]) == 3 * sum(d["active_users"] for d in result["days"])
  assert ((columns["propensity"] > 0) & (columns["propensity"] <= 1)).all()
  assert (columns["propensity"][columns["slot"] == 0] < 1).all()  # sampled, not greedy

  code, text, err = run(["ope", "--logs", str(out), "--policy", str(bundle / "export"),
                         "--candidates", "8", "--bootstrap", "50", "--out", str(tmp_path / "ope")],
                        capsys)
  assert code == 0, err
  for name in ("ips", "clipped_ips", "snips", "dm", "dr"):
    assert name in text
  estimates = json.loads((tmp_path / "ope" / "ope.json").read_text())["estimates"]
  assert estimates["ips"]["ci_low"] <= estimates["ips"]["value"] <= estimates["ips"]["ci_high"]
  assert 0 <= estimates["dm"]["value"] <= 1


def test_deterministic_simulation(bundle, tmp_path, capsys):
  code, text, err = run(["simulate", "--policy", str(bundle / "export" / "1"), "--days", "1",
                         "--users", "8", "--k", "4", "--mmr-lambda", "0.5", "--out",
                         str(tmp_path / "s")], capsys)
  assert code == 0, err
  assert "MMR lambda=0.5" in text and "retention" in text


def test_bad_arguments(bundle, tmp_path, capsys):
  export = str(bundle / "export")
  (tmp_path / "f.txt").write_text("not a directory")
  cases = [
      (["simulate", "--policy", export, "--days", "0", "--out", str(tmp_path)], "--days"),
      (["simulate", "--policy", export, "--days", "1", "--k", "0", "--out", str(tmp_path)],
       "--k (the slate size)"),
      (["simulate", "--policy", export, "--days", "1", "--out", str(tmp_path / "f.txt")],
       "not a directory"),
      (["simulate", "--policy", str(tmp_path / "nope"), "--days", "1", "--out", str(tmp_path)],
       "does not exist"),
      (["simulate", "--policy", str(bundle / "two_tower"), "--days", "1", "--out",
        str(tmp_path)], "training workdir"),
      (["simulate", "--policy", export, "--days", "1", "--users", "5000", "--out",
        str(tmp_path)], "users must be"),
      (["simulate", "--policy", export, "--days", "1", "--temperature", "-1", "--out",
        str(tmp_path)], "temperature"),
      (["ope", "--logs", str(tmp_path), "--policy", export], "not a simulation log"),
      (["ope", "--logs", str(tmp_path / "missing"), "--policy", export], "not a directory"),
  ]
  for argv, message in cases:
    code, _, err = run(argv, capsys)
    assert code == 2 and message in err, (argv, err)


def test_ope_refuses_a_policy_from_another_world(bundle, logged, tmp_path, capsys):
  out = tmp_path / "log"
  shutil.copytree(logged, out)
  meta = json.loads((out / "log.json").read_text())
  meta["synthetic"]["seed"] = 99
  (out / "log.json").write_text(json.dumps(meta))
  code, _, err = run(["ope", "--logs", str(out), "--policy", str(bundle / "export")], capsys)
  assert code == 2 and "different synthetic world" in err and "seed" in err
