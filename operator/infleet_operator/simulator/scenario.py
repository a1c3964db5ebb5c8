"""Build a policy for a simulated fleet: fill in what the simulator knows."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from infleet_operator.autoscaling import Policy, make_policy
from infleet_operator.simulator.fleet import FleetConfig
from infleet_operator.simulator.service import saturated_throughput
from infleet_operator.simulator.traces import Trace

# Picked by bench/autoscaling.py on diurnal+bursty (30 s start delay, 99% goal).
DEFAULT_TARGETS = {"hpa": 4.0, "kpa": 2.0, "predictive": 0.5, "oracle": 0.8}


def policy_for(
    name: str,
    trace: Trace,
    fleet: FleetConfig,
    target: float | None = None,
    min_replicas: int = 1,
    max_replicas: int = 100,
    extra: Mapping[str, Any] | None = None,
) -> Policy:
    """Policy with the simulator's facts: start delay as lead, the service table's capacity."""
    params: dict[str, Any] = {
        "min_replicas": min_replicas,
        "max_replicas": max_replicas,
        "target": DEFAULT_TARGETS.get(name) if target is None else target,
    }
    capacity = saturated_throughput(fleet.service_table, fleet.max_batch)
    if name == "predictive":
        params.update(lead_s=fleet.start_delay_s, capacity_per_replica=capacity)
    elif name == "oracle":
        params.update(
            rate=trace.rate.tolist(),
            capacity_per_replica=capacity,
            lead_s=fleet.start_delay_s * (1 + fleet.start_jitter),
            lookahead_s=fleet.tick_s + fleet.scrape_interval_s,
        )
    params.update(extra or {})
    return make_policy(name, params)
