"""Prometheus metrics of the cache, registered on the registry the worker passes in.

Hits and misses count cache entries: one per request in output mode, one per
row (input item) in embedding mode. ``infleet_cache_requests_total`` counts
requests by outcome in both modes. Hit ratio (PromQL, see docs/cache.md)::

    sum by (model) (rate(infleet_cache_hits_total[5m]))
      / (sum by (model) (rate(infleet_cache_hits_total[5m]))
         + sum by (model) (rate(infleet_cache_misses_total[5m])))
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

LOOKUP_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    1.0,
)

# errors_total{kind}
ERROR_KINDS = (
    "timeout",  # a call ran past redis.timeoutMilliseconds
    "connection",  # refused / reset / DNS / TLS handshake
    "auth",  # wrong password / ACL
    "redis",  # any other error reply (OOM, READONLY replica, ...)
    "corrupt",  # a value that does not decode, or does not fit the request
    "encode",  # a computed result that cannot be encoded
    "backlog",  # a store dropped: too many writes pending
    "internal",  # a bug in the cache layer, caught so the request is still served
)
# bypassed_total{reason}: Redis not asked
BYPASS_REASONS = (
    "breaker_open",  # circuit breaker open: lookup is an instant miss, store skipped
    "oversize",  # value larger than cache.maxValueBytes: not stored
    "unsupported",  # request cannot be keyed (e.g. inputs without a common batch dim)
)
REQUEST_OUTCOMES = ("hit", "partial", "miss")


class CacheMetrics:
    def __init__(self, registry: CollectorRegistry, model: str, mode: str) -> None:
        labels = ["model", "mode"]
        self.model = model
        self.mode = mode
        lv = {"model": model, "mode": mode}
        self._hits = Counter(
            "infleet_cache_hits_total",
            "Cache entries found (requests in output mode, rows in embedding mode).",
            labels,
            registry=registry,
        )
        self._misses = Counter(
            "infleet_cache_misses_total",
            "Cache entries not found and computed (incl. lookups skipped by the breaker).",
            labels,
            registry=registry,
        )
        self._requests = Counter(
            "infleet_cache_requests_total",
            "Requests seen by the cache, by outcome (hit, partial, miss).",
            [*labels, "outcome"],
            registry=registry,
        )
        self._errors = Counter(
            "infleet_cache_errors_total",
            "Cache failures, served without the cache (fail open).",
            [*labels, "kind"],
            registry=registry,
        )
        self._bypassed = Counter(
            "infleet_cache_bypassed_total",
            "Cache operations not sent to Redis, by reason.",
            [*labels, "reason"],
            registry=registry,
        )
        self.lookup_seconds = Histogram(
            "infleet_cache_lookup_seconds",
            "Time of one cache look-up inside the worker (key, Redis round trip, decode).",
            labels,
            buckets=LOOKUP_BUCKETS,
            registry=registry,
        ).labels(**lv)
        self.bytes_read = Counter(
            "infleet_cache_bytes_read_total",
            "Bytes of cache values read from Redis.",
            labels,
            registry=registry,
        ).labels(**lv)
        self.bytes_written = Counter(
            "infleet_cache_bytes_written_total",
            "Bytes of cache values written to Redis.",
            labels,
            registry=registry,
        ).labels(**lv)
        self.breaker_open = Gauge(
            "infleet_cache_breaker_open",
            "1 while the Redis circuit breaker is open or half-open (cache bypassed), else 0.",
            labels,
            registry=registry,
        ).labels(**lv)
        self.pending_writes = Gauge(
            "infleet_cache_pending_writes",
            "Background cache stores not yet acknowledged by Redis.",
            labels,
            registry=registry,
        ).labels(**lv)
        self.hits = self._hits.labels(**lv)
        self.misses = self._misses.labels(**lv)
        self.requests = {o: self._requests.labels(**lv, outcome=o) for o in REQUEST_OUTCOMES}
        self.errors = {k: self._errors.labels(**lv, kind=k) for k in ERROR_KINDS}
        self.bypassed = {r: self._bypassed.labels(**lv, reason=r) for r in BYPASS_REASONS}
        self.breaker_open.set(0)
