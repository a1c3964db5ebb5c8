"""Map an InferenceDeployment's ``spec.autoscaling`` to a policy name and its parameters."""

from __future__ import annotations

from typing import Any

from infleet_operator.api import AutoscalingSpec, PolicyName

DEFAULT_LEAD_SECONDS = 60.0  # until the operator has measured a pod start


def forecast_lead(spec: AutoscalingSpec, measured_pod_start_s: float | None) -> float:
    """Forecast horizon: the user's override, else the measured pod start-to-Ready time."""
    if spec.predictive.horizon_seconds is not None:
        return float(spec.predictive.horizon_seconds)
    if measured_pod_start_s is not None and measured_pod_start_s > 0:
        return float(measured_pod_start_s)
    return DEFAULT_LEAD_SECONDS


def policy_params(
    spec: AutoscalingSpec, measured_pod_start_s: float | None
) -> tuple[str, dict[str, Any]]:
    params: dict[str, Any] = {
        "min_replicas": spec.min_replicas,
        "max_replicas": spec.max_replicas,
    }
    target = spec.target_queue_depth_per_replica
    if spec.policy == PolicyName.HPA:
        params.update(
            target_per_replica=target,
            sync_period_s=float(spec.interval_seconds),
            scale_up_stabilization_s=float(spec.scale_up_stabilization_seconds),
            scale_down_stabilization_s=float(spec.scale_down_stabilization_seconds),
        )
    elif spec.policy == PolicyName.KPA:
        params.update(target_concurrency=target, tick_s=float(spec.interval_seconds))
    else:
        lead = forecast_lead(spec, measured_pod_start_s) if spec.predictive.enabled else 0.0
        params.update(
            lead_s=lead,
            saturation_queue_per_replica=target,
            down_window_s=float(spec.scale_down_stabilization_seconds),
        )
        if spec.predictive.capacity_per_replica is not None:
            params["capacity_per_replica"] = spec.predictive.capacity_per_replica
    return spec.policy.value, params
