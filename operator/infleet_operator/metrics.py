"""Prometheus metrics of the operator itself (served on --metrics-port)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from prometheus_client import REGISTRY, Counter, Gauge, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

RECONCILES = Counter(
    "infleet_operator_reconciles_total",
    "Reconciles of InferenceDeployments, by cause and result.",
    ["cause", "result"],
)
RECONCILE_SECONDS = Histogram(
    "infleet_operator_reconcile_seconds",
    "Time to apply all children of one InferenceDeployment.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
STATUS_WRITES = Counter(
    "infleet_operator_status_writes_total", "Status subresource patches that changed something."
)
MANAGED = Gauge("infleet_operator_managed_objects", "InferenceDeployments seen by this operator.")

# The autoscaler's view of each fleet, per tick (dashboards: replicas vs desired and
# forecast; alerts: at maxReplicas, metrics missing). A fleet that stops ticking (deleted,
# autoscaling turned off) leaves the page after FLEET_TTL_S: no alert on a ghost.
FLEET_TTL_S = 120.0
_FLEET_SERIES = {
    "replicas": (
        "infleet_autoscaler_replicas",
        "Worker replicas asked for (the Deployment's spec)",
    ),
    "ready": ("infleet_autoscaler_ready_replicas", "Ready worker replicas"),
    "max": ("infleet_autoscaler_max_replicas", "spec.autoscaling.maxReplicas"),
    "desired": ("infleet_autoscaler_desired_replicas", "Replicas the autoscaler decided on"),
    "forecast": (
        "infleet_autoscaler_forecast_rps",
        "Arrival rate the policy forecasts one lead time ahead (req/s)",
    ),
    "observed": ("infleet_autoscaler_observed_rps", "Arrival rate the autoscaler observed (req/s)"),
    "missing": (
        "infleet_autoscaler_metrics_missing",
        "1 when the last tick's worker metrics were missing or partial (no scale-down)",
    ),
}


class FleetGauges(Collector):
    """Last tick's numbers per (namespace, name), dropped once the fleet stops ticking."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self.fleets: dict[tuple[str, str], tuple[float, dict[str, float]]] = {}

    def set(self, namespace: str, name: str, values: dict[str, float]) -> None:
        key = (namespace, name)
        old = self.fleets.get(key, (0.0, {}))[1]
        self.fleets[key] = (self.clock(), {**old, **values})  # keep the last forecast

    def collect(self) -> Iterator[Metric]:
        now = self.clock()
        for key in [k for k, (t, _) in self.fleets.items() if now - t > FLEET_TTL_S]:
            del self.fleets[key]
        for field, (metric, doc) in _FLEET_SERIES.items():
            family = GaugeMetricFamily(metric, doc, labels=["namespace", "name"])
            for (namespace, name), (_, values) in self.fleets.items():
                if field in values:
                    family.add_metric([namespace, name], values[field])
            yield family


FLEETS = FleetGauges()
REGISTRY.register(FLEETS)


def record_autoscaler(
    namespace: str,
    name: str,
    current: int,
    ready: int,
    max_replicas: int,
    status: dict[str, object],
    partial: bool,
) -> None:
    """One autoscaler tick's numbers (``status`` is status.autoscaler, camelCase)."""
    values = {
        "replicas": float(current),
        "ready": float(ready),
        "max": float(max_replicas),
        "missing": 1.0 if partial else 0.0,
    }
    for field, key in (
        ("desired", "desiredReplicas"),
        ("forecast", "forecast"),
        ("observed", "observedArrivalRate"),
    ):
        value = status.get(key)
        if isinstance(value, int | float):
            values[field] = float(value)
    FLEETS.set(namespace, name, values)
