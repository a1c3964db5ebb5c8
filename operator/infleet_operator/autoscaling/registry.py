"""Policy name -> factory. Imports every policy; no policy imports this module."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from infleet_operator.autoscaling.hpa import HpaPolicy
from infleet_operator.autoscaling.kpa import KpaPolicy
from infleet_operator.autoscaling.oracle import OraclePolicy
from infleet_operator.autoscaling.policy import Policy
from infleet_operator.autoscaling.predictive import PredictivePolicy

FACTORIES: dict[str, Callable[[Mapping[str, Any]], Policy]] = {
    "hpa": HpaPolicy.from_params,
    "kpa": KpaPolicy.from_params,
    "predictive": PredictivePolicy.from_params,
    "oracle": OraclePolicy.from_params,
}
POLICY_NAMES = tuple(FACTORIES)


def make_policy(name: str, params: Mapping[str, Any] | None = None) -> Policy:
    """Build a policy by name.

    ``params`` holds ``min_replicas``, ``max_replicas``, ``target`` (the policy's
    main knob: queue depth per replica for hpa, concurrency per replica for kpa,
    utilisation for predictive/oracle) and any field of that policy's config.
    """
    if name not in FACTORIES:
        raise ValueError(f"unknown policy {name!r}; choose one of {', '.join(POLICY_NAMES)}")
    return FACTORIES[name](params or {})
