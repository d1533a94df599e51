"""Where downloaded and cached data lives: `--data-dir`, else $JAXREC_DATA_DIR, else ~/.cache/jaxrec."""

import os


def data_dir(override: str | None = None) -> str:
  path = override or os.environ.get("JAXREC_DATA_DIR") or os.path.join(
      os.path.expanduser("~"), ".cache", "jaxrec")
  os.makedirs(path, exist_ok=True)
  return path
