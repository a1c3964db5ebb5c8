"""Prometheus series of the generation engine, on the registry the server passes in.

A contract the autoscaler reads (docs/generation.md): names, types and labels
(``model``, ``version``) change only with a deprecation note. The worker's common
series (infleet_queue_depth, infleet_inflight_requests, ...) sit beside these.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from infleet_worker.metrics import BatchMetrics

TTFT_BUCKETS = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)
ITL_BUCKETS = (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
FINISH_REASONS = ("stop", "length", "abort", "timeout", "error")


class GenerateMetrics:
    def __init__(
        self,
        model: str,
        version: str,
        registry: CollectorRegistry,
        batch: BatchMetrics | None = None,
    ) -> None:
        self.batch = batch  # the worker's common batch series: one batch = one step
        self.registry, self.labels = registry, (model, version)  # speculative series too
        names = ("model", "version")
        lv = (model, version)
        r = registry
        self.ttft = Histogram(
            "infleet_generate_time_to_first_token_seconds",
            "Arrival to first generated token",
            names,
            buckets=TTFT_BUCKETS,
            registry=r,
        ).labels(*lv)
        self.itl = Histogram(
            "infleet_generate_inter_token_latency_seconds",
            "Time between consecutive generated tokens of a sequence",
            names,
            buckets=ITL_BUCKETS,
            registry=r,
        ).labels(*lv)
        self.prompt_tokens = Counter(
            "infleet_generate_prompt_tokens", "Prompt tokens prefilled", names, registry=r
        ).labels(*lv)
        self.generation_tokens = Counter(
            "infleet_generate_generation_tokens", "Tokens generated", names, registry=r
        ).labels(*lv)
        self.preemptions = Counter(
            "infleet_generate_preemptions",
            "Sequences preempted (blocks freed, recomputed later) for lack of KV blocks",
            names,
            registry=r,
        ).labels(*lv)
        finished = Counter(
            "infleet_generate_finished_sequences",
            "Finished sequences by reason",
            (*names, "reason"),
            registry=r,
        )
        self.finished = {f: finished.labels(*lv, f) for f in FINISH_REASONS}
        self.prefix_queries = Counter(
            "infleet_generate_prefix_cache_queried_tokens",
            "Prompt tokens looked up in the prefix cache",
            names,
            registry=r,
        ).labels(*lv)
        self.prefix_hits = Counter(
            "infleet_generate_prefix_cache_hit_tokens",
            "Prompt tokens served from the prefix cache",
            names,
            registry=r,
        ).labels(*lv)

        def gauge(name: str, doc: str) -> Gauge:
            return Gauge(name, doc, names, registry=r).labels(*lv)

        self.running = gauge("infleet_generate_running_sequences", "Sequences in the batch")
        self.waiting = gauge("infleet_generate_waiting_sequences", "Sequences waiting to join")
        self.kv_total = gauge("infleet_generate_kv_blocks", "KV cache blocks in the pool")
        self.kv_used = gauge("infleet_generate_kv_blocks_used", "KV cache blocks in use")
        self.kv_usage = gauge("infleet_generate_kv_cache_usage_ratio", "Used / all KV blocks")
        # Static after warm-up: the operator reads both into status.generation.
        self.kv_capacity = gauge(
            "infleet_generate_kv_capacity_tokens", "Tokens the KV cache holds (blocks x block size)"
        )
        self.context_length = gauge(
            "infleet_generate_context_length_tokens", "Context length served (prompt + output)"
        )
        self.hit_ratio = gauge(
            "infleet_generate_prefix_cache_hit_ratio",
            "Hit tokens / queried tokens since start (use rate() of the counters for now)",
        )

    def observe_step(self, sequences: int) -> None:
        if self.batch is not None:
            self.batch.batch_size.observe(sequences)
            self.batch.batches.inc()

    def bind(
        self,
        running: Callable[[], float],
        waiting: Callable[[], float],
        kv_used: Callable[[], float],
        kv_total: int,
        hit_ratio: Callable[[], float],
        *,
        block_size: int,
        context_length: int,
    ) -> None:
        """Gauges read live engine state at scrape time."""
        self.running.set_function(running)
        self.waiting.set_function(waiting)
        self.kv_used.set_function(kv_used)
        self.kv_total.set(kv_total)
        self.kv_capacity.set(kv_total * block_size)
        self.context_length.set(context_length)
        self.kv_usage.set_function(lambda: kv_used() / kv_total)
        self.hit_ratio.set_function(hit_ratio)
