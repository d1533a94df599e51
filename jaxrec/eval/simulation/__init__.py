"""The synthetic generator's world as an environment that policies run in, day by day.

    world.py          World: users, items, responses, fatigue, retention
    policies.py       world-only policies and scorers (softmax, greedy/MMR, oracle)
    days.py           run(): a policy in the world for N days; the plot and table of days
    log.py            a simulation's decision log: format, writer, reader, replayed state
    dataset_world.py  which synthetic world a prepared dataset (and its models) belongs to
A bundle's serving pipeline as a policy, and `jaxrec simulate`, are in jaxrec/serve/.
"""
