"""Decide the replica count to write, and write it under the autoscaler's own field manager.

Only this field manager ever sets the worker Deployment's ``spec.replicas``
when autoscaling is on; the reconcile's server-side apply leaves the field out,
so the two never fight (and Git, which owns the InferenceDeployment's spec,
never sees a diff).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from infleet_operator.autoscaling.observations import Decision

FIELD_MANAGER = "infleet-autoscaler"


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


def replicas_apply_body(namespace: str, name: str, replicas: int) -> dict[str, Any]:
    """The whole server-side-apply body the autoscaler owns: one field."""
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"replicas": replicas},
    }
