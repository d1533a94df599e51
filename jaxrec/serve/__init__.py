"""The recommendation pipeline over an export bundle, as library code: the HTTP job (serving/),
the simulator's bundle policies and the decision-log replay all run it from here.

    recommender.py  Recommender, Request, ServingConfig: retrieval -> ranking -> re-ranking
    policies.py     a bundle's pipeline as a policy or scorer in the simulated world (make_policy)
    simulate.py     `jaxrec simulate` over a bundle, and `jaxrec ope` on a simulation log
    replay.py       a bundle's pipeline replayed on a serving decision log (`jaxrec ope`)
"""
