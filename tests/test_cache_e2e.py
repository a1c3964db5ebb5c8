"""End to end: two real worker servers share one Redis; clients are NVIDIA's tritonclient.

A request answered by worker A is a cache hit on worker B (identical output, no engine
execution on B: counted by the engine and by Triton statistics), in output mode and, with
partial hits, in embedding mode. Cache metrics appear on the worker's /metrics.
"""

from __future__ import annotations

import urllib.request
from typing import Any

import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from prometheus_client import CollectorRegistry

from infleet_worker.cache.factory import build_cache
from infleet_worker.lifecycle import serve
from worker_engines import IN_FEATURES, MLPEngine
from worker_fixtures import ServerThread, worker_config


class CachedServer(ServerThread):
    """A worker server whose cache is built by build_cache on the worker's own registry."""

    def __init__(self, redis_url: str, mode: str, **cache: Any) -> None:
        redis = {"url": redis_url, "timeoutMilliseconds": 1000}  # busy CI hosts
        cfg = worker_config(cache={"mode": mode, "redis": redis, **cache})
        self.registry = CollectorRegistry()
        super().__init__(cfg, MLPEngine(), build_cache(cfg, self.registry))

    async def _main(self) -> None:
        import asyncio

        self._stop = asyncio.Event()
        async with serve(self.cfg, self.engine, self.cache, registry=self.registry) as worker:
            self.worker = worker
            self._ready.set()
            await self._stop.wait()

    def __enter__(self) -> CachedServer:
        self.start()
        return self

    @property
    def rows_executed(self) -> int:
        assert isinstance(self.engine, MLPEngine)
        return self.engine.executed_rows

    def flush(self) -> None:
        self.call(self.cache.flush())

    def stats(self) -> dict[str, Any]:
        with httpclient.InferenceServerClient(self.http_url) as c:
            stats: dict[str, Any] = c.get_inference_statistics("mlp")["model_stats"][0]
            return stats


def _want(engine: MLPEngine, x: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        out: np.ndarray = engine.module(torch.from_numpy(x)).numpy()
        return out


def _http_infer(url: str, x: np.ndarray) -> httpclient.InferResult:
    with httpclient.InferenceServerClient(url) as c:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return c.infer("mlp", [inp])


def _grpc_infer(url: str, x: np.ndarray) -> grpcclient.InferResult:
    with grpcclient.InferenceServerClient(url) as c:
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        return c.infer("mlp", [inp])


@pytest.mark.slow
def test_output_cache_shared_by_two_worker_servers(redis_url: str) -> None:
    x = np.random.default_rng(3).standard_normal((4, IN_FEATURES)).astype(np.float32)
    with CachedServer(redis_url, "output") as a, CachedServer(redis_url, "output") as b:
        ra = _http_infer(a.http_url, x)
        assert a.rows_executed == 4
        a.flush()
        rb = _grpc_infer(b.grpc_url, x)
        assert b.rows_executed == 0, "a full hit must skip batcher and engine"
        for name in ("output", "sum"):
            assert rb.as_numpy(name).tobytes() == ra.as_numpy(name).tobytes()
        np.testing.assert_allclose(rb.as_numpy("output"), _want(a.engine, x), rtol=1e-6)  # type: ignore[arg-type]
        # again on B over HTTP: still no execution
        rb2 = _http_infer(b.http_url, x)
        assert rb2.as_numpy("output").tobytes() == ra.as_numpy("output").tobytes()
        assert b.rows_executed == 0
        st = b.stats()
        assert st["execution_count"] == 0
        assert st["inference_stats"]["cache_hit"]["count"] == 2
        # a different input misses and executes
        _http_infer(b.http_url, x + 1)
        assert b.rows_executed == 4
        body = urllib.request.urlopen(b.metrics_url, timeout=5).read().decode()
        assert 'infleet_cache_hits_total{mode="output",model="mlp"} 2.0' in body
        assert 'infleet_cache_misses_total{mode="output",model="mlp"} 1.0' in body
        assert 'infleet_cache_breaker_open{mode="output",model="mlp"} 0.0' in body
        assert "infleet_cache_lookup_seconds_bucket" in body


@pytest.mark.slow
def test_embedding_cache_partial_hits_through_worker_servers(redis_url: str) -> None:
    x = np.random.default_rng(4).standard_normal((8, IN_FEATURES)).astype(np.float32)
    cached_rows = [0, 2, 3, 5, 7]
    with CachedServer(redis_url, "embedding") as a, CachedServer(redis_url, "embedding") as b:
        _http_infer(a.http_url, x[cached_rows])
        a.flush()
        r = _grpc_infer(b.grpc_url, x)
        assert b.rows_executed == 3, b.engine.batches  # type: ignore[attr-defined]
        want = _want(a.engine, x)  # type: ignore[arg-type]
        np.testing.assert_allclose(r.as_numpy("output"), want, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(
            r.as_numpy("sum"), want.sum(1, keepdims=True), rtol=1e-5, atol=1e-5
        )
        b.flush()
        # every row is now cached: a full hit on A, in a new order
        perm = x[::-1].copy()
        before = a.rows_executed
        r2 = _http_infer(a.http_url, perm)
        assert a.rows_executed == before
        np.testing.assert_allclose(r2.as_numpy("output"), want[::-1], rtol=1e-5, atol=1e-6)
        assert a.stats()["inference_stats"]["cache_hit"]["count"] == 1
