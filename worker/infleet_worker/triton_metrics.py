"""Triton Inference Server's metric names, beside infleet's own, so that existing Triton
dashboards and alerts work unchanged (docs/worker.md maps them).

Same names, labels and meaning as Triton's metrics documentation. Triton's cumulative
counters carry no ``_total`` suffix; prometheus_client would add one to a counter (and
its text parser renames a bare counter sample to ``..._total``), so they are exported
as ``untyped`` families with the bare name: the series and every query on them are
Triton's. Request-side series are counted by each front end (RequestMetrics),
batch-side series by whoever runs batches (BatchMetrics); the pod's supervisor sums
them like every other series.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Gauge
from prometheus_client.core import Metric
from prometheus_client.registry import Collector

from infleet_worker.stats import ModelStats

NAMES = ("model", "version")

# Triton's `reason` label of nv_inference_request_failure, by infleet outcome.
FAILURE_REASONS = {
    "rejected": "REJECTED",
    "timeout": "REJECTED",
    "error": "BACKEND",
    "invalid": "OTHER",
}


class Cumulative:
    """One series of a cumulative family; one writer (the event loop or the engine thread)."""

    __slots__ = ("value",)

    def __init__(self) -> None:
        self.value = 0.0

    def inc(self, amount: float = 1.0) -> None:
        self.value += amount


class CumulativeFamily(Collector):
    """A Triton counter: exported under its bare name, as an untyped family."""

    def __init__(
        self, name: str, doc: str, labelnames: tuple[str, ...], registry: CollectorRegistry
    ) -> None:
        self.name = name
        self.doc = doc
        self.labelnames = labelnames
        self.children: dict[tuple[str, ...], Cumulative] = {}
        registry.register(self)

    def labels(self, *values: str) -> Cumulative:
        child = self.children.get(values)
        if child is None:
            child = self.children[values] = Cumulative()
        return child

    def collect(self) -> Iterator[Metric]:
        m = Metric(self.name, self.doc, "untyped")
        for values, child in list(self.children.items()):
            m.add_sample(self.name, dict(zip(self.labelnames, values, strict=True)), child.value)
        yield m


# Triton's per-request families, read at scrape time from the statistics the request
# path keeps anyway (ModelStats, the statistics extension): no second count per request.
# (family, doc, ModelStats duration, field: "count" or "us")
STATS_FAMILIES = (
    ("nv_inference_request_success", "Number of successful inference requests, all batch "
     "sizes", "success", "count"),
    ("nv_inference_request_duration_us", "Cumulative inference request duration in "
     "microseconds (includes cached requests)", "success", "us"),
    ("nv_inference_queue_duration_us", "Cumulative inference queuing duration in "
     "microseconds (includes cached requests)", "queue", "us"),
    ("nv_inference_compute_input_duration_us", "Cumulative compute input duration in "
     "microseconds (does not include cached requests)", "compute_input", "us"),
    ("nv_inference_compute_infer_duration_us", "Cumulative compute inference duration in "
     "microseconds (does not include cached requests)", "compute_infer", "us"),
    ("nv_inference_compute_output_duration_us", "Cumulative inference compute output "
     "duration in microseconds (does not include cached requests)", "compute_output", "us"),
    ("nv_cache_num_hits_per_model", "Number of cache hits per model", "cache_hit", "count"),
    ("nv_cache_num_misses_per_model", "Number of cache misses per model", "cache_miss",
     "count"),
)  # fmt: skip


class TritonRequestMetrics(Collector):
    """Per request, as Triton counts them (the front end's share): failures by reason are
    counted (rare); everything else is rendered from ``stats`` at scrape time."""

    def __init__(self, stats: ModelStats, registry: CollectorRegistry) -> None:
        self.stats = stats
        self.labels = {"model": stats.name, "version": stats.version}
        failure = CumulativeFamily(
            "nv_inference_request_failure",
            "Number of failed inference requests, all batch sizes",
            (*NAMES, "reason"),
            registry,
        )
        lv = (stats.name, stats.version)
        self.failure = {o: failure.labels(*lv, r) for o, r in FAILURE_REASONS.items()}
        registry.register(self)

    def collect(self) -> Iterator[Metric]:
        for name, doc, duration, kind in STATS_FAMILIES:
            d = self.stats.d[duration]
            m = Metric(name, doc, "untyped")
            m.add_sample(name, self.labels, d.count if kind == "count" else d.ns / 1000)
            yield m


class TritonBatchMetrics:
    """Per executed batch, as Triton counts them (the engine's share)."""

    def __init__(self, model: str, version: str, registry: CollectorRegistry) -> None:
        self.inferences = CumulativeFamily(
            "nv_inference_count",
            "Number of inferences performed (does not include cached requests)",
            NAMES,
            registry,
        ).labels(model, version)
        self.executions = CumulativeFamily(
            "nv_inference_exec_count",
            "Number of model executions performed (does not include cached requests)",
            NAMES,
            registry,
        ).labels(model, version)
        self.pending = Gauge(
            "nv_inference_pending_request_count",
            "Instantaneous number of pending requests awaiting execution per-model.",
            NAMES,
            registry=registry,
        ).labels(model, version)
