import os

import pytest

from jaxrec.data.movielens import load_movielens_100k
from jaxrec.data.prepare import prepare


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory):
  """The download cache: the developer's own when set, else one per test session."""
  return os.environ.get("JAXREC_DATA_DIR") or str(tmp_path_factory.mktemp("cache"))


@pytest.fixture(scope="session")
def ml100k_raw(data_dir):
  return load_movielens_100k(data_dir)


@pytest.fixture(scope="session")
def ml100k(ml100k_raw, tmp_path_factory):
  return prepare(ml100k_raw, str(tmp_path_factory.mktemp("prepared") / "ml-100k"))
