"""Build what a simulation runs: the operator's control loop and a fleet timed like it.

Everything goes through :mod:`infleet_operator.autoscaling.spec`, the path the
operator's timer takes: a policy named on the command line is a default
``spec.autoscaling`` with that policy and target, not a parameter set of its own.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from infleet_operator.api import AutoscalingSpec, InferenceDeploymentSpec, PolicyName
from infleet_operator.autoscaling.spec import (
    ControlLoop,
    LoopSettings,
    loop_settings,
    shed_queue_depth,
)
from infleet_operator.simulator.fleet_config import FleetConfig
from infleet_operator.simulator.profile import Profile
from infleet_operator.simulator.service import saturated_throughput
from infleet_operator.simulator.traces import Trace

Setup = tuple[ControlLoop, FleetConfig]


def timed_like(fleet: FleetConfig, settings: LoopSettings) -> FleetConfig:
    """The fleet with the operator's decision period and metrics freshness."""
    return replace(
        fleet,
        tick_s=settings.decision_period_s,
        scrape_interval_s=settings.scrape_interval_s,
        scrape_at_tick=settings.scrape_at_decision,
        metric_lag_s=0.0,
    )


def fleet_for_spec(
    spec: InferenceDeploymentSpec, profile: Profile, base: FleetConfig
) -> FleetConfig:
    """The data-plane facts of a manifest (batching) and of a measured profile."""
    b = spec.batching
    timeout = b.default_timeout_microseconds / 1e6
    fleet = replace(
        base,
        service_table=profile.service_table,
        start_delay_s=profile.pod_start_seconds,
        max_batch=b.max_batch_size,
        max_queue_delay_s=b.max_queue_delay_microseconds / 1e6,
        request_timeout_s=timeout if timeout > 0 else math.inf,
    )
    return with_overload(fleet, spec.autoscaling)


def with_overload(fleet: FleetConfig, auto: AutoscalingSpec) -> FleetConfig:
    """``spec.autoscaling.overload``: what workers do while new pods start."""
    adaptive = auto.overload.adaptive_batching
    target = auto.target_queue_depth_per_replica
    return replace(
        fleet,
        overload_max_batch=adaptive.max_batch_size if adaptive.enabled else 0,
        overload_queue_delay_s=adaptive.max_queue_delay_microseconds / 1e6,
        overload_queue_per_replica=target,
        shed_queue_per_replica=shed_queue_depth(auto) or 0,
    )


def setup_for_spec(auto: AutoscalingSpec, fleet: FleetConfig) -> Setup:
    """What the operator runs once it has measured this fleet's pod start time."""
    settings = loop_settings(auto, fleet.start_delay_s)
    return ControlLoop(settings), timed_like(fleet, settings)


def spec_for_policy(
    name: str,
    target: float | None,
    min_replicas: int,
    max_replicas: int,
    capacity_per_replica: float,
    interval_s: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> AutoscalingSpec:
    """``spec.autoscaling`` for a policy named on the command line.

    ``target`` is the policy's main knob: targetQueueDepthPerReplica for hpa and
    kpa, predictive.targetUtilization for predictive. ``extra``: more fields, camelCase.
    """
    raw: dict[str, Any] = {
        "enabled": True,
        "policy": name,
        "minReplicas": min_replicas,
        "maxReplicas": max_replicas,
        "predictive": {"capacityPerReplica": capacity_per_replica},
    }
    if interval_s is not None:
        raw["intervalSeconds"] = interval_s
    if target is not None:
        if name == PolicyName.PREDICTIVE:
            raw["predictive"] = {**raw["predictive"], "targetUtilization": target}
        else:
            raw["targetQueueDepthPerReplica"] = target
    return AutoscalingSpec.model_validate(_merged(raw, extra or {}))


def _merged(base: dict[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in extra.items():
        out[k] = (
            _merged(out[k], v) if isinstance(v, Mapping) and isinstance(out.get(k), dict) else v
        )
    return out


def setup_oracle(
    trace: Trace,
    fleet: FleetConfig,
    target: float | None,
    min_replicas: int,
    max_replicas: int,
    interval_s: int | None = None,
) -> Setup:
    """The oracle (simulator only): knows the trace's intensity, decides on the same clock."""
    period = float(interval_s or AutoscalingSpec().interval_seconds)
    params: dict[str, object] = {
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "rate": trace.rate.tolist(),
        "capacity_per_replica": saturated_throughput(fleet.service_table, fleet.max_batch),
        "lead_s": fleet.start_delay_s * (1 + fleet.start_jitter),
        "lookahead_s": 2 * period,
    }
    if target is not None:
        params["target"] = target
    settings = LoopSettings(
        policy="oracle",
        params=params,
        decision_period_s=period,
        scrape_interval_s=period,
        scrape_at_decision=True,
        lead_s=fleet.start_delay_s,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
    )
    return ControlLoop(settings), timed_like(fleet, settings)


def setup_policy(
    name: str,
    trace: Trace,
    fleet: FleetConfig,
    target: float | None = None,
    min_replicas: int = 1,
    max_replicas: int = 100,
    interval_s: int | None = None,
    extra: Mapping[str, Any] | None = None,
) -> Setup:
    """A named policy with the simulated model's facts (its capacity as the prior)."""
    if name == "oracle":
        return setup_oracle(trace, fleet, target, min_replicas, max_replicas, interval_s)
    capacity = saturated_throughput(fleet.service_table, fleet.max_batch)
    auto = spec_for_policy(name, target, min_replicas, max_replicas, capacity, interval_s, extra)
    return setup_for_spec(auto, with_overload(fleet, auto))
