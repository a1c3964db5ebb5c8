"""From a policy's decision to the replica count the autoscaler writes."""

from __future__ import annotations

from dataclasses import dataclass

from infleet_operator.autoscaling.observations import Decision


@dataclass(frozen=True, slots=True)
class Plan:
    replicas: int
    changed: bool
    reason: str


def plan_replicas(decision: Decision, current: int, *, partial_metrics: bool) -> Plan:
    """The policy's answer, except: never scale down on a tick with missing pod metrics."""
    desired = decision.desired_replicas
    if partial_metrics and desired < current:
        return Plan(
            current,
            False,
            f"holding at {current}: some workers did not report metrics "
            f"(policy wanted {desired}: {decision.reason})",
        )
    return Plan(desired, desired != current, decision.reason)
