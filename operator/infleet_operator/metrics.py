"""Prometheus metrics of the operator itself (served on --metrics-port)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

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
# forecast). A value the tick did not have (no forecast yet) keeps its last one.
_FLEET = ["namespace", "name"]
AUTOSCALER_REPLICAS = Gauge(
    "infleet_autoscaler_replicas", "Worker replicas asked for (the Deployment's spec)", _FLEET
)
AUTOSCALER_READY = Gauge("infleet_autoscaler_ready_replicas", "Ready worker replicas", _FLEET)
AUTOSCALER_DESIRED = Gauge(
    "infleet_autoscaler_desired_replicas", "Replicas the autoscaler decided on", _FLEET
)
AUTOSCALER_FORECAST = Gauge(
    "infleet_autoscaler_forecast_rps",
    "Arrival rate the policy forecasts one lead time ahead (req/s)",
    _FLEET,
)
AUTOSCALER_OBSERVED = Gauge(
    "infleet_autoscaler_observed_rps", "Arrival rate the autoscaler observed (req/s)", _FLEET
)
AUTOSCALER_MAX = Gauge(
    "infleet_autoscaler_max_replicas", "spec.autoscaling.maxReplicas (alert: fleet at max)", _FLEET
)
AUTOSCALER_MISSING = Gauge(
    "infleet_autoscaler_metrics_missing",
    "1 when the last tick's worker metrics were missing or partial (no scale-down)",
    _FLEET,
)


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
    labels = (namespace, name)
    AUTOSCALER_MAX.labels(*labels).set(max_replicas)
    AUTOSCALER_REPLICAS.labels(*labels).set(current)
    AUTOSCALER_READY.labels(*labels).set(ready)
    AUTOSCALER_MISSING.labels(*labels).set(1 if partial else 0)
    for gauge, key in (
        (AUTOSCALER_DESIRED, "desiredReplicas"),
        (AUTOSCALER_FORECAST, "forecast"),
        (AUTOSCALER_OBSERVED, "observedArrivalRate"),
    ):
        value = status.get(key)
        if isinstance(value, int | float):
            gauge.labels(*labels).set(value)
