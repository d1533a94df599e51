"""Re-ranking: the last serving stage, from ~1000 ranked candidates to the k items shown. Runs on
the host in numpy, once per request.

    pipeline.py     rerank(): rules -> MMR with group caps -> freshness -> exploration,
                    returning items, the stage that placed each, and propensities
    config.py       RerankConfig, validated on construction
    mmr.py          Maximal Marginal Relevance selection
    rules.py        blocked / excluded items and per-group caps
    freshness.py    guaranteed slots for recently added items
    exploration.py  Thompson-sampled exploration slots with Monte-Carlo propensities
    posteriors.py   BetaPosteriors: per-item engagement counts, shared and thread-safe
    slots.py        pinning items at list positions
    checks.py       argument checks raising UserError

Typical use: one `BetaPosteriors(catalogue_size)` per process, updated from feedback; per request
`rerank(candidates, scores, vectors, k=20, config=RerankConfig(group_cap=3, freshness_slots=1),
groups=creators, ages=ages, posteriors=posteriors, rng=rng)`.
"""
