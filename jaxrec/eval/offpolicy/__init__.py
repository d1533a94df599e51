"""Off-policy evaluation: a target policy's value estimated from what another policy logged.

    estimators.py        bandit estimators (IPS, clipped IPS, SNIPS, DM, DR), bootstrap, report
    slate_estimators.py  estimators for ranked lists (position IPS, PI, top-k IPS, cascade IPS)
    evaluation.py        a target policy on a simulation's decision log (simulation/log.py)
    decision_log.py      the serving job's decision log: format, writer (DecisionLog), reader
    page_world.py        a small slate problem with a known answer, for checking the estimators
"""
