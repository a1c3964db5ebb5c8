"""A closed-loop load generator over several client processes (tritonclient, gRPC or HTTP).

One Python client process tops out near 3-4k requests/s, below what a GPU worker
serves at one row per request; so ``run_load`` spreads ``concurrency`` in-flight
requests over ``procs`` processes (spawned, each with its own asyncio tritonclient),
all measuring the same wall-clock window, and merges their counts and latencies.

    from loadgen import LoadSpec, run_load
    result = run_load(LoadSpec("127.0.0.1:8001", "grpc", "mlp", inputs), 256, procs=8)
"""

from __future__ import annotations

import asyncio
import math
import multiprocessing
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class LoadSpec:
    url: str  # host:port for the protocol
    protocol: str  # grpc | http
    model: str
    inputs: dict[str, tuple[str, np.ndarray]]  # name -> (datatype, array), batch first
    outputs: tuple[str, ...] = ()


@dataclass
class LoadResult:
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    first_error: str = ""

    def merge(self, other: LoadResult) -> None:
        self.requests += other.requests
        self.errors += other.errors
        self.latencies += other.latencies
        self.first_error = self.first_error or other.first_error

    @property
    def per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        """Latency percentile in ms."""
        if not self.latencies:
            return math.nan
        return float(np.percentile(np.array(self.latencies) * 1000, q))


def _client(spec: LoadSpec, concurrency: int) -> tuple[Any, list[Any], list[Any]]:
    if spec.protocol == "grpc":
        import tritonclient.grpc.aio as mod

        client: Any = mod.InferenceServerClient(spec.url)
    else:
        import tritonclient.http.aio as mod  # type: ignore[no-redef]

        client = mod.InferenceServerClient(spec.url, conn_limit=max(concurrency, 1))
    inputs = []
    for name, (datatype, array) in spec.inputs.items():
        i = mod.InferInput(name, list(array.shape), datatype)
        if spec.protocol == "grpc":
            i.set_data_from_numpy(array)
        else:
            i.set_data_from_numpy(array, binary_data=True)
        inputs.append(i)
    outputs = [
        mod.InferRequestedOutput(n) if spec.protocol == "grpc" else
        mod.InferRequestedOutput(n, binary_data=True)  # type: ignore[call-arg]
        for n in spec.outputs
    ]  # fmt: skip
    return client, inputs, outputs


async def _drive(spec: LoadSpec, concurrency: int, start: float, end: float) -> LoadResult:
    client, inputs, outputs = _client(spec, concurrency)
    result = LoadResult(seconds=end - start)

    async def one() -> None:
        while True:
            begin = time.time()
            if begin >= end:
                return
            try:
                await client.infer(spec.model, inputs, outputs=outputs or None)
            except Exception as e:
                result.errors += 1
                result.first_error = result.first_error or str(e)[:300]
                await asyncio.sleep(0.001)
                continue
            done = time.time()
            if begin >= start and done <= end:
                result.requests += 1
                result.latencies.append(done - begin)

    try:
        await asyncio.gather(*(one() for _ in range(concurrency)))
    finally:
        await client.close()
    return result


def _proc_main(spec: LoadSpec, concurrency: int, start: float, end: float) -> LoadResult:
    return asyncio.run(_drive(spec, concurrency, start, end))


def run_load(
    spec: LoadSpec,
    concurrency: int,
    *,
    procs: int = 1,
    warmup: float = 2.0,
    duration: float = 10.0,
) -> LoadResult:
    """``concurrency`` requests kept in flight by ``procs`` processes; counts the window
    [now + warmup + start-up, + duration]."""
    procs = max(1, min(procs, concurrency))
    shares = [concurrency // procs + (1 if i < concurrency % procs else 0) for i in range(procs)]
    start = time.time() + warmup + (1.5 if procs > 1 else 0.0)  # spawned clients start up
    end = start + duration
    if procs == 1:
        return _proc_main(spec, concurrency, start, end)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(procs) as pool:
        parts = pool.starmap(_proc_main, [(spec, n, start, end) for n in shares])
    total = LoadResult(seconds=duration)
    for part in parts:
        total.merge(part)
    return total
