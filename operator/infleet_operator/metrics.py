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
