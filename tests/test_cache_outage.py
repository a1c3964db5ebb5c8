"""Fail open: Redis dying or hanging under steady traffic never fails a request."""

from __future__ import annotations

import asyncio
import statistics
import time

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from cache_fixtures import CountingEmbedder, cache_config, ids_request, serve
from infleet_worker.cache.breaker import BreakerState, CircuitBreaker
from infleet_worker.cache.factory import build_cache
from infleet_worker.cache.redis_cache import OutputCache
from redis_fixtures import RedisServer


def test_breaker_state_machine() -> None:
    now = [0.0]
    seen: list[BreakerState] = []
    b = CircuitBreaker(
        3, backoff_s=1.0, max_backoff_s=4.0, clock=lambda: now[0], on_change=seen.append
    )
    for _ in range(2):
        assert b.allow()
        b.record_failure()
    assert b.is_closed
    b.record_success()  # resets the consecutive count
    for _ in range(3):
        assert b.allow()
        b.record_failure()
    assert b.state is BreakerState.OPEN and not b.allow()
    now[0] = 1.0
    assert b.allow()  # the one probe
    assert b.state is BreakerState.HALF_OPEN and not b.allow()
    b.record_failure()  # probe failed: open again, back-off doubled
    now[0] = 2.5
    assert not b.allow()
    now[0] = 3.0
    assert b.allow()
    b.release()  # a cancelled probe lets another one go
    assert b.allow()
    b.record_success()
    assert b.is_closed and b.allow()
    assert seen == [
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.OPEN,
        BreakerState.HALF_OPEN,
        BreakerState.CLOSED,
    ]


def _cache(url: str, timeout_ms: int = 50) -> tuple[OutputCache, CollectorRegistry]:
    reg = CollectorRegistry()
    cache = build_cache(
        cache_config(url, "output", timeout_milliseconds=timeout_ms),
        reg,
        failure_threshold=5,
        breaker_backoff_s=0.2,
        breaker_max_backoff_s=0.5,
    )
    assert isinstance(cache, OutputCache)
    return cache, reg


def _val(reg: CollectorRegistry, name: str, **labels: str) -> float:
    return reg.get_sample_value(name, {"model": "enc", "mode": "output", **labels}) or 0.0


class Traffic:
    """Closed-loop clients cycling over a small set of distinct requests."""

    def __init__(self, cache: OutputCache, clients: int = 4, distinct: int = 16) -> None:
        self.cache = cache
        self.model = CountingEmbedder(dim=768)
        self.reference = CountingEmbedder(dim=768)
        self.requests = [ids_request([[i, i + 1, i + 2]]) for i in range(distinct)]
        self.clients = clients
        self.ok = 0
        self.failed = 0
        self.cached = 0
        self.lookups: list[tuple[float, float]] = []  # (time, seconds)
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    async def _client(self, c: int) -> None:
        i = c
        while not self._stop.is_set():
            req = self.requests[i % len(self.requests)]
            i += 1
            try:
                t0 = time.perf_counter()
                look = await self.cache.lookup(req)
                self.lookups.append((t0, time.perf_counter() - t0))
                if look.result is not None:
                    res = look.result
                    self.cached += 1
                else:
                    computed = await self.model.run(req)
                    res = await self.cache.complete(req, look, computed)
                want = self.reference.compute(req.inputs)["embedding"].array
                assert np.array_equal(res.outputs["embedding"].array, want)
                self.ok += 1
            except Exception:
                self.failed += 1
            await asyncio.sleep(0.001)

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._client(c)) for c in range(self.clients)]

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)

    def lookup_times(self, since: float, until: float = float("inf")) -> list[float]:
        return [dt for t, dt in self.lookups if since <= t < until]


async def _until(cond: object, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.02)
    return False


@pytest.mark.slow
async def test_kill_and_restart_redis_under_traffic(redis_server: RedisServer) -> None:
    cache, reg = _cache(redis_server.url)
    traffic = Traffic(cache)
    traffic.start()
    assert await _until(lambda: traffic.cached > 50, 10)

    redis_server.kill()
    t_kill = time.perf_counter()
    assert await _until(lambda: _val(reg, "infleet_cache_breaker_open") == 1, 5)
    await asyncio.sleep(1.0)
    ok_during = traffic.ok
    assert _val(reg, "infleet_cache_errors_total", kind="connection") >= 5
    bypassed = _val(reg, "infleet_cache_bypassed_total", reason="breaker_open")
    assert bypassed > 10

    hits_before = traffic.cached
    redis_server.start()  # same port, empty: entries come back as traffic re-stores them
    assert redis_server.port == int(cache.store.redis.connection_pool.connection_kwargs["port"])
    assert await _until(lambda: traffic.cached > hits_before + 50, 15), "hits did not resume"
    assert _val(reg, "infleet_cache_breaker_open") == 0
    await traffic.stop()
    await cache.close()
    assert traffic.failed == 0
    assert traffic.ok > ok_during > 0
    down = traffic.lookup_times(t_kill + 0.2, t_kill + 1.0)
    assert down and statistics.median(down) < 0.005


@pytest.mark.slow
async def test_hung_redis_opens_breaker_and_stops_paying_the_timeout(
    redis_server: RedisServer,
) -> None:
    timeout_ms = 50
    cache, reg = _cache(redis_server.url, timeout_ms)
    traffic = Traffic(cache, clients=4)
    traffic.start()
    assert await _until(lambda: traffic.cached > 50, 10)
    healthy = traffic.lookup_times(0)
    redis_server.pause()  # accepts nothing, answers nothing: every call would time out
    t_pause = time.perf_counter()
    try:
        assert await _until(lambda: _val(reg, "infleet_cache_breaker_open") == 1, 5)
        t_open = time.perf_counter()
        await asyncio.sleep(1.5)
        t_end = time.perf_counter()
    finally:
        redis_server.resume()
    before_open = traffic.lookup_times(t_pause, t_open)
    after_open = traffic.lookup_times(t_open + 0.01, t_end)
    timeouts = _val(reg, "infleet_cache_errors_total", kind="timeout")
    print(
        f"\nhealthy lookup p50 {statistics.median(healthy) * 1e3:.3f} ms; "
        f"hung, breaker closed: {len(before_open)} lookups, max "
        f"{max(before_open) * 1e3:.1f} ms; breaker open: {len(after_open)} lookups, p50 "
        f"{statistics.median(after_open) * 1e3:.3f} ms, slow (>= timeout/2) "
        f"{sum(dt >= timeout_ms / 2e3 for dt in after_open)}; timeouts counted {timeouts:.0f}"
    )
    # before the breaker opened, look-ups paid the timeout...
    assert max(before_open) >= timeout_ms / 1e3 * 0.8
    assert timeouts >= 5
    # ...afterwards almost none do: only the half-open probes (one per back-off)
    slow = [dt for dt in after_open if dt >= timeout_ms / 2e3]
    assert len(after_open) > 100
    assert len(slow) <= 1.5 / 0.2 + 1
    assert statistics.median(after_open) < 0.002
    # and the cache comes back by itself
    hits = traffic.cached
    assert await _until(lambda: traffic.cached > hits + 50, 10)
    await traffic.stop()
    await cache.close()
    assert traffic.failed == 0


async def test_redis_down_at_start_up(tmp_path: object) -> None:
    """A worker whose Redis is not there yet still serves; the cache starts working later."""
    from pathlib import Path

    server = RedisServer(Path(str(tmp_path)))
    cache, reg = _cache(server.url)
    model = CountingEmbedder(dim=8)
    req = ids_request([[1, 2, 3]])
    for _ in range(8):
        assert "embedding" in (await serve(cache, model, req)).outputs
    assert _val(reg, "infleet_cache_breaker_open") == 1
    server.start()
    try:

        async def hit() -> bool:
            res = await serve(cache, model, req)
            await cache.flush()
            return res.cached

        deadline = time.monotonic() + 5
        while not await hit():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        await cache.close()
        server.stop()
