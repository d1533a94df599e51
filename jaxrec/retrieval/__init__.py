"""Retrieval: the top-k item search serving runs, and the bundle it loads.

    exact.py    brute-force maximum inner product top-k (numpy and jitted JAX) and recall@k
    index.py    ScaNN tree + asymmetric-hashing index, or brute force for small catalogues
    bundle.py   the versioned export directory: item embeddings, index, query encoder,
                vocabularies, and a manifest with measured recall and per-file checksums

Typical use: `write_bundle(f"{root}/{version}", item_embeddings=..., item_ids=..., ...)` after
training, then `load_bundle(latest_version(root)).search(query_vectors, k)` in serving.
"""
