"""Evaluation, below the serving pipeline (it imports no jaxrec.serve, jaxrec.train or serving):

    metrics/     offline metrics: top-K ranking (ranking.py), ranking heads' AUC/logloss (heads.py),
                 beyond-accuracy metrics of lists, popularity, cold start, reference scorers
    simulation/  the synthetic generator's world as an environment, world-only policies, the
                 day-by-day loop and its decision log
    offpolicy/   off-policy estimators (bandit and slate), evaluation on a simulation log, and the
                 serving job's decision log (format, writer, reader)
"""
