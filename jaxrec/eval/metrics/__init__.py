"""Offline metrics and the references they are compared with.

    ranking.py                 Recall/NDCG/MRR, full and sampled, and MetricAccumulator
    heads.py                   multi-task ranking heads on impressions: AUC, logloss, calibration,
                               grouped NDCG (RankingAccumulator)
    beyond_accuracy.py         coverage, exposure, diversity, novelty, serendipity, calibration
    lists.py                   those metrics over the lists an evaluation ranked (ListCollector)
    popularity.py              the most-popular baseline through the same metric code
    cold_start.py              the cold-start report (users whose held-out item is new)
    metadata_baselines.py      references that rank new items from metadata
    long_history_reference.py  a scorer that knows the synthetic-long world's rules
"""
