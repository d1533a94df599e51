"""Start the service on an export directory, ask it for one user's recommendations, print them.

    python -m serving.demo --export demo_out/export [--user 5] [--k 10]

What `make demo` ends with: a real `jaxrec serve` process on a free local port, a real HTTP
request, and the answer as a table (title, combined score, per-head scores, the stage that placed
each item), then the server is stopped.
"""

from __future__ import annotations

import argparse
import os

import httpx
import numpy as np

from jaxrec.data.storage import PreparedDataset
from jaxrec.retrieval.bundle import latest_version
from serving.process import running_server


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--export", required=True)
  parser.add_argument("--user", default="5", help="a raw user id of the dataset")
  parser.add_argument("--k", type=int, default=10)
  args = parser.parse_args()
  bundle = latest_version(args.export)
  titles = PreparedDataset(os.path.join(bundle, "dataset"))
  with running_server(args.export) as url:
    response = httpx.post(url + "/v1/recommend", timeout=30, json={
        "user_id": args.user, "k": args.k, "context": {"device": "web", "hour": 20}})
    response.raise_for_status()
    body = response.json()
  items = titles.vocabs["item"]
  title = titles.item_features.get("title")
  print(f"\nPOST /v1/recommend user {args.user} -> {body['model_version']}")
  print(f"stage timings (ms): {body['timings_ms']}")
  heads = list(body["items"][0]["heads"]) if body["items"] else []
  print(f"{'#':>3}  {'item':>6}  {'title':42}  {'score':>7}  " + "  ".join(f"{h:>7}" for h in heads)
        + "  stage")
  for rank, item in enumerate(body["items"], 1):
    name = ""
    if title is not None:
      name = str(title[items.lookup(np.array([item["item_id"]]).astype(items.raw_ids.dtype))[0]])
    print(f"{rank:>3}  {item['item_id']:>6}  {name[:42]:42}  {item['score']:7.3f}  "
          + "  ".join(f"{item['heads'][h]:7.3f}" for h in heads) + f"  {item['stage']}")


if __name__ == "__main__":
  main()
