"""The live autoscaler: scrape workers, build an Observation, ask a policy, set replicas.

Policies themselves (pure, shared with the simulator) live in
:mod:`infleet_operator.autoscaling`; this package is the plumbing around them.
"""
