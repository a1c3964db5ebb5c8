"""Autoscaling policies: observations in, desired replicas and a reason out.

Pure and deterministic: time comes in with each observation, state lives in the
policy object, nothing reads the wall clock. Import cost is a few dataclasses.
"""

from infleet_operator.autoscaling.observations import Bounds, Decision, Observation
from infleet_operator.autoscaling.policy import POLICY_NAMES, Policy, make_policy

__all__ = ["POLICY_NAMES", "Bounds", "Decision", "Observation", "Policy", "make_policy"]
