"""Autoscaling: policies, and the one path from ``spec.autoscaling`` to replica plans.

Pure and deterministic: time comes in with each observation, state lives in the
policy object, nothing reads the wall clock or the network (live I/O is in
:mod:`infleet_operator.scaler`). The operator's timer and ``infleet simulate``
both go through :mod:`infleet_operator.autoscaling.spec`.
"""

from infleet_operator.autoscaling.observations import Bounds, Decision, Observation
from infleet_operator.autoscaling.plan import Plan, plan_replicas
from infleet_operator.autoscaling.policy import Policy
from infleet_operator.autoscaling.registry import POLICY_NAMES, make_policy

__all__ = [
    "POLICY_NAMES",
    "Bounds",
    "Decision",
    "Observation",
    "Plan",
    "Policy",
    "make_policy",
    "plan_replicas",
]
