"""The autoscaler's signal for generative fleets: worker pages rendered by the worker's
own metrics code, parsed as the scaler parses them, observed, and decided on by each
policy the operator runs (predictive, hpa, kpa)."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from infleet_operator.api import AutoscalingSpec
from infleet_operator.autoscaling.spec import (
    DEFAULT_TOKENS_PER_REPLICA,
    ControlLoop,
    loop_settings,
    token_signal,
)
from infleet_operator.autoscaling.tokens import TokenSignal
from infleet_operator.scaler.controller import Autoscaler, TickOutcome
from infleet_operator.scaler.prometheus import assemble, queries
from infleet_operator.scaler.samples import WorkerSample, parse_worker_metrics
from infleet_operator.simulator.manifest import load_fleet
from infleet_worker.generate.metrics import GenerateMetrics
from infleet_worker.metrics import BatchMetrics, RequestMetrics, ready_gauge

ROOT = Path(__file__).resolve().parent.parent
KV_BLOCKS = 100


def _page(
    waiting: int, running: int, kv_used: int, arrivals: int, tokens: int, finished: int
) -> str:
    """A generative worker's /metrics page, rendered by the worker's own code."""
    registry = CollectorRegistry()
    requests = RequestMetrics("llama", "1", registry)
    batch = BatchMetrics("llama", "1", registry)
    gen = GenerateMetrics("llama", "1", registry, batch)
    gen.bind(
        running=lambda: float(running),
        waiting=lambda: float(waiting),
        kv_used=lambda: float(kv_used),
        kv_total=KV_BLOCKS,
        hit_ratio=lambda: 0.0,
        block_size=16,
        context_length=256,
    )
    batch.queue_depth.set(waiting)
    requests.bind_inflight(lambda: float(waiting + running))
    requests.arrivals.inc(arrivals)
    requests.requests["success"].inc(finished)
    gen.generation_tokens.inc(tokens)
    gen.finished["length"].inc(finished)
    ready_gauge("llama", "1", registry).set(1)
    return generate_latest(registry).decode()


def test_parse_generative_page() -> None:
    sample = parse_worker_metrics(_page(3, 5, 40, 20, 900, 9))
    g = sample.generation
    assert g is not None
    assert (g.waiting, g.running, g.kv_blocks_used, g.kv_blocks) == (3, 5, 40, KV_BLOCKS)
    assert (g.generated_total, g.finished_total) == (900, 9)
    assert sample.queue_depth == 3 and sample.inflight == 8


def test_single_pass_page_has_no_generation() -> None:
    registry = CollectorRegistry()
    RequestMetrics("enc", "1", registry)
    BatchMetrics("enc", "1", registry)
    assert parse_worker_metrics(generate_latest(registry).decode()).generation is None


def _autoscaler(policy: str, **fields: object) -> Autoscaler:
    auto = AutoscalingSpec.model_validate(
        {"enabled": True, "policy": policy, "maxReplicas": 20, "intervalSeconds": 1, **fields}
    )
    return Autoscaler.for_spec(auto, 30.0, TokenSignal(kv_target=0.8))


def _ticks(
    scaler: Autoscaler, first: list[str], second: list[str], dt: float = 10.0
) -> TickOutcome:
    """Two scrapes ``dt`` apart of the same pods (rates need two)."""
    n = len(first)
    pods = [f"p{i}" for i in range(n)]
    parse = parse_worker_metrics
    s0: dict[str, WorkerSample | None] = {p: parse(t) for p, t in zip(pods, first, strict=True)}
    s1: dict[str, WorkerSample | None] = {p: parse(t) for p, t in zip(pods, second, strict=True)}
    scaler.tick(now=0.0, samples=s0, current_replicas=n, ready_replicas=n)
    return scaler.tick(now=dt, samples=s1, current_replicas=n, ready_replicas=n)


def test_observation_in_tokens() -> None:
    # 2 pods; over 10 s each gets 10 sequences and generates 1000 tokens (100 per sequence).
    before = [_page(0, 4, 20, 100, 10_000, 96)] * 2
    after = [_page(1, 6, 60, 110, 11_000, 104)] * 2
    out = _ticks(_autoscaler("predictive"), before, after)
    obs = out.view.observation
    assert obs.completion_rate == pytest.approx(200.0)  # generated tokens/s, 2 pods
    assert obs.work_per_request == pytest.approx(22_000 / 208)
    assert obs.arrival_rate == pytest.approx(2.0 * 22_000 / 208)  # 2 seq/s x tokens/seq
    assert (obs.queue_depth, obs.in_flight) == (2, 12)
    assert obs.memory_load == pytest.approx(0.6 * 2 / 0.8)


def test_hpa_on_sequences_and_kv() -> None:
    # 26 sequences over 2 ready vs 8 per replica -> 4.
    busy = _ticks(
        _autoscaler("hpa", targetQueueDepthPerReplica=8),
        [_page(0, 0, 10, 0, 0, 0)] * 2,
        [_page(5, 8, 30, 20, 1000, 10)] * 2,
    )
    assert busy.plan.replicas == 4
    # The reason says what was counted (status.autoscaler.reason): sequences, not requests.
    assert busy.decision.reason.startswith("sequences (waiting + running) 26 over 2 ready")
    # Few sequences but the KV cache 95% full (long contexts): 0.95 x 2 / 0.8 -> 3.
    full = _ticks(
        _autoscaler("hpa", targetQueueDepthPerReplica=8),
        [_page(0, 2, 90, 0, 0, 0)] * 2,
        [_page(0, 2, 95, 2, 500, 2)] * 2,
    )
    assert full.plan.replicas == 3
    assert "KV cache in use" in full.decision.reason


def test_kpa_scales_on_kv_pressure() -> None:
    out = _ticks(
        _autoscaler("kpa", targetQueueDepthPerReplica=8),
        [_page(0, 2, 95, 0, 0, 0)] * 2,
        [_page(0, 2, 95, 2, 500, 2)] * 2,
    )
    assert out.plan.replicas == 3
    assert out.decision.reason.startswith("sequences (waiting + running) stable")


def test_predictive_plans_in_tokens_per_second() -> None:
    # 2 pods produce 3000 tokens/s together; prior 1000 tokens/s x 0.7 -> ceil(3000*1.15/700).
    pages = [_page(0, 8, 20, 0, 0, 0)] * 2, [_page(0, 8, 20, 150, 15_000, 150)] * 2
    out = _ticks(_autoscaler("predictive"), *pages)
    assert out.view.observation.completion_rate == pytest.approx(3000.0)
    assert out.plan.replicas == 5 and "tokens/s" in out.decision.reason
    # Quiet on tokens but the KV cache of both pods is full: at least ceil(1.0*2/0.8*1.15).
    quiet = _ticks(
        _autoscaler("predictive"),
        [_page(0, 1, 100, 0, 0, 0)] * 2,
        [_page(0, 1, 100, 1, 10, 1)] * 2,
    )
    assert quiet.plan.replicas == 3
    assert "KV cache" in quiet.decision.reason


def test_pod_without_generation_series_is_missing() -> None:
    registry = CollectorRegistry()
    m = RequestMetrics("enc", "1", registry)
    BatchMetrics("enc", "1", registry)
    m.arrivals.inc(5)
    single = parse_worker_metrics(generate_latest(registry).decode())
    scaler = _autoscaler("hpa")
    scaler.tick(now=0.0, samples={"a": single}, current_replicas=1, ready_replicas=1)
    out = scaler.tick(now=10.0, samples={"a": single}, current_replicas=1, ready_replicas=1)
    assert out.view.observation.missing and out.plan.replicas == 1


def test_prometheus_reads_the_same_series() -> None:
    qs = queries("ns", ["a"], generative=True)
    assert "infleet_generate_kv_blocks_used" in qs and "infleet_generate_waiting_sequences" in qs
    base = {"queue_depth": 1.0, "inflight": 3.0, "arrivals_total": 9.0, "sample_time": 5.0}
    gen = {
        "infleet_generate_waiting_sequences": 1.0,
        "infleet_generate_running_sequences": 2.0,
        "infleet_generate_kv_blocks_used": 7.0,
        "infleet_generate_kv_blocks": 64.0,
        "infleet_generate_generation_tokens_total": 400.0,
        "infleet_generate_finished_sequences_total": 4.0,
    }
    sample = assemble(["a"], {k: {"a": v} for k, v in {**base, **gen}.items()})["a"]
    assert sample is not None and sample.generation is not None
    assert sample.generation.kv_blocks == 64.0
    assert assemble(["a"], {k: {"a": v} for k, v in base.items()})["a"].generation is None  # type: ignore[union-attr]


def test_signal_from_the_manifest() -> None:
    llama = load_fleet(ROOT / "manifests/examples/llama-generate.yaml").spec
    tokens = token_signal(llama)
    assert tokens is not None and tokens.default_tokens_per_sequence == 128.0
    assert tokens.kv_target == llama.autoscaling.target_kv_cache_usage == 0.8
    encoder = load_fleet(ROOT / "manifests/examples/encoder-gpu.yaml").spec
    assert token_signal(encoder) is None
    auto = AutoscalingSpec(enabled=True)
    settings = loop_settings(auto, 30.0, tokens)
    assert settings.params["capacity_per_replica"] == DEFAULT_TOKENS_PER_REPLICA
    assert "capacity_per_replica" not in loop_settings(auto, 30.0).params
    assert ControlLoop(settings).settings.tokens == tokens
