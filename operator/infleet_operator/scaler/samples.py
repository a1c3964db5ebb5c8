"""Parse one worker's /metrics page into the few numbers the autoscaler reads.

The metric names are the worker's documented contract (docs/worker.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client.parser import text_string_to_metric_families

# Outcomes that mean "a request was served" (completion rate = capacity evidence).
SERVED_OUTCOMES = frozenset({"success", "cache_hit"})


# A generative worker's series (worker/infleet_worker/generate/metrics.py, a contract) ->
# GenerationSample field; counters by their sample name (family + _total).
GENERATE_SERIES = {
    "infleet_generate_waiting_sequences": "waiting",
    "infleet_generate_running_sequences": "running",
    "infleet_generate_kv_blocks_used": "kv_blocks_used",
    "infleet_generate_kv_blocks": "kv_blocks",
    "infleet_generate_generation_tokens_total": "generated_total",
    "infleet_generate_finished_sequences_total": "finished_total",
}


@dataclass(frozen=True, slots=True)
class GenerationSample:
    """A generative worker's token load: gauges and two counters."""

    waiting: float  # sequences
    running: float  # sequences
    kv_blocks_used: float
    kv_blocks: float
    generated_total: float  # counter: tokens generated
    finished_total: float  # counter: sequences finished, every reason


@dataclass(frozen=True, slots=True)
class WorkerSample:
    """One scrape of one worker pod."""

    queue_depth: float  # waiting in the batcher
    inflight: float  # accepted, not answered (includes queued)
    arrivals_total: float  # counter
    served_total: float  # counter: success + cache_hit
    ready: bool
    # When the sample was taken (Prometheus' own timestamp); None = at the tick (pod
    # scrape). Rates use it, so a sample Prometheus has not refreshed gives no rate.
    time: float | None = None
    generation: GenerationSample | None = None  # a generative worker's series, when it has them

    @property
    def running(self) -> float:
        """Requests inside a batch on the engine right now."""
        return max(self.inflight - self.queue_depth, 0.0)


class MetricsParseError(ValueError):
    """The page is not a worker's metrics page."""


def parse_worker_metrics(text: str) -> WorkerSample:
    values: dict[str, float] = {}
    served = 0.0
    seen_served = False
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            name = sample.name
            if name in GENERATE_SERIES:
                values[name] = values.get(name, 0.0) + sample.value
            elif name == "infleet_requests_total":
                seen_served = True
                if sample.labels.get("outcome") in SERVED_OUTCOMES:
                    served += sample.value
            elif name in (
                "infleet_queue_depth",
                "infleet_inflight_requests",
                "infleet_request_arrivals_total",
                "infleet_ready",
            ):
                values[name] = values.get(name, 0.0) + sample.value
    required = (
        "infleet_queue_depth",
        "infleet_inflight_requests",
        "infleet_request_arrivals_total",
    )
    missing = [name for name in required if name not in values]
    if missing or not seen_served:
        raise MetricsParseError(
            f"not an infleet worker metrics page: missing {missing or 'requests'}"
        )
    return WorkerSample(
        queue_depth=values["infleet_queue_depth"],
        inflight=values["infleet_inflight_requests"],
        arrivals_total=values["infleet_request_arrivals_total"],
        served_total=served,
        ready=values.get("infleet_ready", 0.0) >= 1.0,
        generation=generation_sample(values),
    )


def generation_sample(values: dict[str, float]) -> GenerationSample | None:
    """The generative series out of ``{series name: value}``; None unless all are there."""
    if not all(name in values for name in GENERATE_SERIES):
        return None
    return GenerationSample(**{f: values[name] for name, f in GENERATE_SERIES.items()})
