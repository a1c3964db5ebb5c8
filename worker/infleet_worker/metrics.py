"""Prometheus metrics of one worker, in private registries (tests run several workers).

These names are the autoscaler's contract (see docs/worker.md); every series
carries ``model`` and ``version`` labels. The cache adds its own series to
``Metrics.registry``.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from infleet_worker.batch_run import BatchOutcome
from infleet_worker.stats import ModelStats
from infleet_worker.triton_metrics import TritonBatchMetrics, TritonRequestMetrics

OUTCOMES = ("success", "rejected", "timeout", "error", "invalid", "cache_hit")

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.02,
    0.05,
    0.1,
    0.2,
    0.5,
    1.0,
    2.0,
    5.0,
    10.0,
    30.0,
)
QUEUE_BUCKETS = (0.0001, 0.00025, *LATENCY_BUCKETS)  # queue waits go shorter
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)


NAMES = ("model", "version")


class RequestMetrics:
    """What the request path counts: each front-end process has its own; the pod's
    supervisor sums them (core/metrics_merge.py) into one scrape."""

    def __init__(self, model: str, version: str, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.inflight = Gauge(
            "infleet_inflight_requests",
            "Requests accepted and not yet answered (queued + running)",
            NAMES,
            registry=r,
        ).labels(model, version)
        requests = Counter(
            "infleet_requests",
            "Finished inference requests by outcome",
            (*NAMES, "outcome"),
            registry=r,
        )
        self.requests = {o: requests.labels(model, version, o) for o in OUTCOMES}
        self.arrivals = Counter(
            "infleet_request_arrivals",
            "Inference requests received (arrival rate = rate())",
            NAMES,
            registry=r,
        ).labels(model, version)
        self.queue_wait = Histogram(
            "infleet_queue_wait_seconds",
            "Time a request waited in the batcher queue",
            NAMES,
            buckets=QUEUE_BUCKETS,
            registry=r,
        ).labels(model, version)
        self.latency = Histogram(
            "infleet_request_latency_seconds",
            "End-to-end request latency inside the worker (decode to encode)",
            NAMES,
            buckets=LATENCY_BUCKETS,
            registry=r,
        ).labels(model, version)
        self.triton: TritonRequestMetrics | None = None  # bind_stats

    def bind_stats(self, stats: ModelStats) -> None:
        """Triton's request families, read from the statistics the service keeps."""
        self.triton = TritonRequestMetrics(stats, self.registry)

    def bind_inflight(self, inflight: Callable[[], float]) -> None:
        """Read the gauge from live state at scrape time (no per-request cost)."""
        self.inflight.set_function(inflight)

    def queued(self, queue_ns: int) -> None:
        """A request's answer came from a batch after waiting ``queue_ns`` for it."""
        self.queue_wait.observe(queue_ns / 1e9)

    def finish(self, outcome: str, elapsed_ns: int) -> None:
        """A request got its answer (one of OUTCOMES) after ``elapsed_ns``."""
        self.requests[outcome].inc()
        self.latency.observe(elapsed_ns / 1e9)
        if self.triton is not None and outcome in self.triton.failure:
            self.triton.failure[outcome].inc()


class BatchMetrics:
    """What the batcher counts: the engine core's (or the in-process batcher's)."""

    def __init__(self, model: str, version: str, registry: CollectorRegistry | None = None):
        self.registry = registry if registry is not None else CollectorRegistry()
        r = self.registry
        self.queue_depth = Gauge(
            "infleet_queue_depth", "Requests waiting in the batcher queue", NAMES, registry=r
        ).labels(model, version)
        self.batch_size = Histogram(
            "infleet_batch_size",
            "Rows per executed batch",
            NAMES,
            buckets=BATCH_BUCKETS,
            registry=r,
        ).labels(model, version)
        self.batches = Counter(
            "infleet_batches", "Batches executed by the engine", NAMES, registry=r
        ).labels(model, version)
        self.isolated = Counter(
            "infleet_isolated_failures",
            "Requests that failed alone while the rest of their batch was answered "
            "(bad input or non-finite output found by bisecting a failed batch)",
            NAMES,
            registry=r,
        ).labels(model, version)
        self.triton = TritonBatchMetrics(model, version, r)

    def bind_queue_depth(self, depth: Callable[[], float]) -> None:
        """Both queue-depth gauges (infleet's and Triton's pending count), read at scrape."""
        self.queue_depth.set_function(depth)
        self.triton.pending.set_function(depth)

    def observe(self, outcome: BatchOutcome) -> None:
        self.batch_size.observe(outcome.timing.batch_size)
        self.batches.inc()
        self.triton.executions.inc()
        self.triton.inferences.inc(outcome.timing.batch_size)
        if outcome.isolated:
            self.isolated.inc(outcome.isolated)


def ready_gauge(model: str, version: str, registry: CollectorRegistry) -> Gauge:
    """1 when Ready; one per pod (the supervisor's, or the in-process worker's)."""
    return Gauge(
        "infleet_ready", "1 when the worker is Ready to take traffic", NAMES, registry=registry
    ).labels(model, version)
