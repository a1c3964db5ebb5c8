"""Open-loop traffic to a fleet with the real tritonclient (HTTP, asyncio).

Requests arrive as a Poisson process whose rate follows a schedule, each sent
to the next Ready endpoint (round robin), and every outcome is recorded per
second. Open loop on purpose: a closed loop slows down when the fleet does and
hides exactly the overload an autoscaler must react to.
"""

from __future__ import annotations

import asyncio
import bisect
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import tritonclient.http.aio as httpclient
from tritonclient.utils import InferenceServerException

RateFn = Callable[[float], float]


def ramp_schedule(points: Sequence[tuple[float, float]]) -> RateFn:
    """Piecewise-linear req/s through ``(time_s, rate)`` points; flat after the last."""
    times = [t for t, _ in points]
    rates = [r for _, r in points]

    def rate(t: float) -> float:
        if t <= times[0]:
            return rates[0]
        i = bisect.bisect_right(times, t)
        if i >= len(times):
            return rates[-1]
        t0, t1, r0, r1 = times[i - 1], times[i], rates[i - 1], rates[i]
        return r0 + (r1 - r0) * (t - t0) / (t1 - t0)

    return rate


@dataclass
class SecondStats:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    latencies: list[float] = field(default_factory=list)
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class TrafficStats:
    t0: float = field(default_factory=time.monotonic)
    seconds: dict[int, SecondStats] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)
    send_times: list[float] = field(default_factory=list)  # seconds since t0, each request

    def _bucket(self, now: float) -> SecondStats:
        return self.seconds.setdefault(int(now - self.t0), SecondStats())

    def sent(self) -> None:
        now = time.monotonic()
        self._bucket(now).sent += 1
        self.send_times.append(now - self.t0)

    def done(self, latency: float, error: str | None) -> None:
        b = self._bucket(time.monotonic())
        if error is None:
            b.ok += 1
            b.latencies.append(latency)
        else:
            b.failed += 1
            kind = error.split(":", 1)[0][:60]
            b.errors[kind] = b.errors.get(kind, 0) + 1
            if len(self.failures) < 50:
                self.failures.append(error[:300])

    def window(self, seconds: int) -> tuple[float, float, float, float, int]:
        """(sent/s, ok/s, p50 ms, p99 ms, failed) over the last ``seconds`` full seconds."""
        now = int(time.monotonic() - self.t0)
        buckets = [self.seconds.get(s) for s in range(max(0, now - seconds), now)]
        present = [b for b in buckets if b is not None]
        span = max(1, min(seconds, now))
        lat = sorted(x for b in present for x in b.latencies)
        p50 = lat[len(lat) // 2] * 1e3 if lat else float("nan")
        p99 = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1e3 if lat else float("nan")
        return (
            sum(b.sent for b in present) / span,
            sum(b.ok for b in present) / span,
            p50,
            p99,
            sum(b.failed for b in present),
        )

    def error_kinds(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for b in self.seconds.values():
            for kind, n in b.errors.items():
                out[kind] = out.get(kind, 0) + n
        return out

    @property
    def total_ok(self) -> int:
        return sum(b.ok for b in self.seconds.values())

    @property
    def total_failed(self) -> int:
        return sum(b.failed for b in self.seconds.values())


class FleetTraffic:
    """Send ``rate(t)`` req/s of FP32 ``[1, width]`` inputs to ``model`` on ``addresses()``."""

    def __init__(
        self,
        addresses: Callable[[], list[str]],
        model: str,
        *,
        port: int = 8000,
        input_name: str = "input",
        width: int = 16,
        max_outstanding: int = 2000,
        seed: int = 0,
    ) -> None:
        self._addresses = addresses
        self._model = model
        self._port = port
        self._input = input_name
        self._width = width
        self._max_outstanding = max_outstanding
        self._rng = random.Random(seed)
        self._clients: dict[str, httpclient.InferenceServerClient] = {}
        self._rr = 0
        self._outstanding = 0
        self.stats = TrafficStats()

    def _client(self, address: str) -> httpclient.InferenceServerClient:
        c = self._clients.get(address)
        if c is None:
            c = httpclient.InferenceServerClient(f"{address}:{self._port}", conn_limit=256)
            self._clients[address] = c
        return c

    async def _one(self) -> None:
        addresses = self._addresses()
        if not addresses:
            self.stats.done(0.0, "no Ready endpoint")
            return
        self._rr = (self._rr + 1) % len(addresses)
        address = addresses[self._rr]
        data = np.full((1, self._width), self._rng.random(), dtype=np.float32)
        inp = httpclient.InferInput(self._input, list(data.shape), "FP32")
        inp.set_data_from_numpy(data, binary_data=True)
        t0 = time.perf_counter()
        try:
            await self._client(address).infer(self._model, [inp])
        except InferenceServerException as e:
            self.stats.done(0.0, f"{e.status() or 'error'}: {e.message()}")
        except Exception as e:  # connection refused/reset: a lost request
            self.stats.done(0.0, f"{type(e).__name__}: {e}")
        else:
            self.stats.done(time.perf_counter() - t0, None)
        finally:
            self._outstanding -= 1

    async def run(self, rate: RateFn, duration: float, stop: asyncio.Event | None = None) -> None:
        """Open-loop arrivals for ``duration`` seconds (or until ``stop`` is set)."""
        tasks: set[asyncio.Task[None]] = set()
        start = time.monotonic()
        next_at = start
        while True:
            now = time.monotonic()
            t = now - start
            if t >= duration or (stop is not None and stop.is_set()):
                break
            r = rate(t)
            if r <= 0:
                await asyncio.sleep(0.05)
                next_at = time.monotonic()
                continue
            if now < next_at:
                await asyncio.sleep(min(next_at - now, 0.05))
                continue
            next_at += self._rng.expovariate(r)
            if self._outstanding >= self._max_outstanding:
                self.stats.done(0.0, "client: too many outstanding requests")
                continue
            self._outstanding += 1
            self.stats.sent()
            task = asyncio.create_task(self._one())
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        if tasks:
            await asyncio.wait(tasks, timeout=60)

    async def close(self) -> None:
        for c in self._clients.values():
            await c.close()
        self._clients.clear()
