"""status.generation: a generative fleet's KV capacity and context length, read from the
pods' real /metrics pages (the worker's own GenerateMetrics, served over HTTP) into the
status the operator writes."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from fakekube import FakeKube
from infleet_operator import api, status
from infleet_operator.capacity import CapacityCache, PodCapacity, parse_capacity, summarize
from infleet_operator.runtime import Runtime
from infleet_worker.generate.metrics import GenerateMetrics
from infleet_worker.metrics import BatchMetrics, RequestMetrics

NOW = dt.datetime(2026, 1, 1, 12, 0, 0, tzinfo=dt.UTC)
LLAMA = {
    "model": {"name": "llama", "source": "builtin://llama", "task": "generate"},
    "engine": {"device": "cpu"},
    "replicas": 1,
}
MLP = {"model": {"name": "mlp", "source": "builtin://mlp"}, "engine": {"device": "cpu"}}
KEY = ("ns", "m")


def worker_page(blocks: int = 40, block_size: int = 16, context: int = 1024) -> str:
    """A generation worker's metrics page, as the worker renders it."""
    reg = CollectorRegistry()
    gm = GenerateMetrics("llama", "1", reg, BatchMetrics("llama", "1", reg))
    RequestMetrics("llama", "1", reg)
    gm.bind(
        running=lambda: 0,
        waiting=lambda: 0,
        kv_used=lambda: 3,
        kv_total=blocks,
        hit_ratio=lambda: 0.0,
        block_size=block_size,
        context_length=context,
    )
    return generate_latest(reg).decode()


def single_pass_page() -> str:
    reg = CollectorRegistry()
    BatchMetrics("mlp", "1", reg)
    RequestMetrics("mlp", "1", reg)
    return generate_latest(reg).decode()


def pod(
    name: str, ip: str = "127.0.0.1", ready: bool = True, created: str = "2026-01-01T11:00:00Z"
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "creationTimestamp": created},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
        },
    }


def test_parse_the_worker_page() -> None:
    assert parse_capacity(worker_page(40, 16, 1024)) == PodCapacity(640, 1024)
    assert parse_capacity(single_pass_page()) is None


def test_summary_is_the_newest_ready_pod() -> None:
    known = {"old": PodCapacity(640, 1024), "new": PodCapacity(1280, 2048)}
    pods = [pod("old"), pod("new", created="2026-01-01T11:30:00Z")]
    assert summarize(pods, known) == {"kvCapacityTokens": 1280, "contextLength": 2048}
    pods[1]["metadata"]["deletionTimestamp"] = "2026-01-01T11:40:00Z"  # going away
    assert summarize(pods, known) == {"kvCapacityTokens": 640, "contextLength": 1024}
    assert summarize([pod("old", ready=False)], known) is None
    assert summarize([pod("unread")], known) is None


def compute(spec: dict, capacity: dict | None, current: dict | None = None) -> dict:
    body: dict[str, Any] = {"metadata": {"name": "m", "namespace": "ns", "generation": 1}}
    body["spec"] = spec
    if current is not None:
        body["status"] = current
    parsed = api.InferenceDeploymentSpec.model_validate(spec)
    return status.compute(body, parsed, None, [], observed_generation=1, now=NOW, capacity=capacity)


def test_status_shows_it_for_generative_fleets_only() -> None:
    cap = {"kvCapacityTokens": 640, "contextLength": 1024}
    st = compute(LLAMA, cap)
    assert st["generation"] == cap
    api.InferenceDeploymentStatus.model_validate(st)  # the CRD's status schema
    # no pod reported yet (scaled to zero, starting): the last figures stay
    assert compute(LLAMA, None, current={"generation": cap})["generation"] == cap
    assert "generation" not in compute(LLAMA, None)
    # a single-pass fleet has none, even if it once generated
    assert "generation" not in compute(MLP, cap, current={"generation": cap})
    assert status.changed({"generation": cap}, compute(MLP, None))


@pytest.fixture
async def metrics_server() -> AsyncIterator[tuple[int, dict[str, Any]]]:
    served: dict[str, Any] = {"page": worker_page(), "status": 200}

    async def page(_: web.Request) -> web.Response:
        return web.Response(text=served["page"], status=served["status"])

    app = web.Application()
    app.router.add_get("/metrics", page)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield port, served
    await runner.cleanup()


async def test_each_ready_pod_is_read_once_and_failures_retried(
    metrics_server: tuple[int, dict[str, Any]],
) -> None:
    port, served = metrics_server
    spec = api.InferenceDeploymentSpec.model_validate(LLAMA)
    cache = CapacityCache(port=port, timeout_s=1.0)
    served["status"] = 503
    assert await cache.update(KEY, spec, [pod("a")]) is True  # try again soon
    assert cache.summary(KEY, [pod("a")]) is None
    served["status"] = 200
    assert await cache.update(KEY, spec, [pod("a"), pod("b", ready=False)]) is False
    assert cache.known[KEY] == {"a": PodCapacity(640, 1024)}
    served["page"] = worker_page(blocks=1)  # a pod already read is not read again
    assert await cache.update(KEY, spec, [pod("a")]) is False
    assert cache.summary(KEY, [pod("a")]) == {"kvCapacityTokens": 640, "contextLength": 1024}
    assert await cache.update(KEY, spec, [pod("b")]) is False  # a is gone, b Ready now
    assert cache.known[KEY] == {"b": PodCapacity(16, 1024)}
    served["page"] = single_pass_page()  # no gauges: retried, then given up on
    tries = [await cache.update(KEY, spec, [pod("c")]) for _ in range(10)]
    assert tries == [True] * 9 + [False]
    mlp = api.InferenceDeploymentSpec.model_validate(MLP)
    assert await cache.update(KEY, mlp, [pod("b")]) is False
    assert KEY not in cache.known


async def test_runtime_writes_and_removes_status_generation(
    metrics_server: tuple[int, dict[str, Any]],
) -> None:
    port, _ = metrics_server
    kube = FakeKube()
    body = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "m", "namespace": "ns", "generation": 1, "resourceVersion": "1"},
        "spec": LLAMA,
    }
    kube.objects[(api.KIND, "ns", "m")] = body
    rt = Runtime(kube=kube)  # type: ignore[arg-type]
    rt.capacity.port = port
    rt.indices.pods = {KEY: [pod("m-1")]}
    rt.indices.ideps = {KEY: [body]}
    await rt.refresh(KEY)
    written = kube.objects[(api.KIND, "ns", "m")]
    assert written["status"]["generation"] == {"kvCapacityTokens": 640, "contextLength": 1024}

    written["spec"] = MLP  # the fleet stops generating: the field is removed (merge null)
    rt.indices.ideps = {KEY: [written]}
    await rt.refresh(KEY)
    assert kube.objects[(api.KIND, "ns", "m")]["status"]["generation"] is None
