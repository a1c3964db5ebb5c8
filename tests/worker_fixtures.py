"""pytest plugin for the worker tests: configs and servers on free loopback ports.

- ``worker_config(**overrides)``: a WorkerConfig bound to 127.0.0.1 port 0.
- ``ServerThread``: ``serve()`` running in its own thread and event loop, so sync
  tritonclient calls and aio clients in the test's loop both work.
- fixture ``mlp_server``: a ServerThread serving ``MLPEngine`` (max batch 16, 2 ms delay),
  once per transport (the compiled one; aiohttp and grpcio).
- ``require_native()``: skips a native-transport case where it is not built, except in
  CI (``make test`` builds it; a missing build there is a failure, not a skip).
"""

from __future__ import annotations

import asyncio
import os
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from infleet_worker import native_transport
from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import Engine
from infleet_worker.lifecycle import Worker, serve
from worker_engines import MLPEngine


def worker_config(
    name: str = "mlp",
    source: str = "python://worker_engines:mlp",
    batching: dict[str, Any] | None = None,
    server: dict[str, Any] | None = None,
    **extra: Any,
) -> WorkerConfig:
    doc: dict[str, Any] = {
        "model": {"name": name, "source": source},
        "batching": {"maxBatchSize": 16, "maxQueueDelayMicroseconds": 2000, **(batching or {})},
        "server": {
            "host": "127.0.0.1",
            "httpPort": 0,
            "grpcPort": 0,
            "metricsPort": 0,
            "drainSeconds": 0,
            **(server or {}),
        },
        **extra,
    }
    return WorkerConfig.model_validate(doc)


class ServerThread:
    """A worker in a background thread with its own loop."""

    def __init__(self, cfg: WorkerConfig, engine: Engine, cache: Any = None) -> None:
        self.cfg = cfg
        self.engine = engine
        self.cache = cache
        self.loop = asyncio.new_event_loop()
        self.worker: Worker | None = None
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="worker-server", daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        try:
            self.loop.run_until_complete(self._main())
        except BaseException as e:
            self._error = e
            self._ready.set()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self.cfg, self.engine, self.cache) as worker:
            self.worker = worker
            self._ready.set()
            await self._stop.wait()

    def start(self) -> ServerThread:
        self._thread.start()
        self._ready.wait(30)
        if self._error is not None:
            raise self._error
        assert self.worker is not None
        return self

    def call(self, coro: Any, timeout: float = 30) -> Any:
        """Run a coroutine in the server's loop (e.g. worker.drain())."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call_soon(self, coro: Any) -> Any:
        """Start a coroutine in the server's loop; returns a concurrent Future."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        if self._stop is not None and self._thread.is_alive():
            self.loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(30)

    @property
    def http_url(self) -> str:
        assert self.worker is not None
        return f"127.0.0.1:{self.worker.http_port}"

    @property
    def grpc_url(self) -> str:
        assert self.worker is not None
        return f"127.0.0.1:{self.worker.grpc_port}"

    @property
    def metrics_url(self) -> str:
        assert self.worker is not None
        return f"http://127.0.0.1:{self.worker.metrics_port}/metrics"

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def mlp_engine() -> MLPEngine:
    return MLPEngine()


TRANSPORTS = ["native", "python"]


def require_native() -> None:
    if native_transport.available():
        return
    if os.environ.get("CI"):
        pytest.fail("the compiled transport is not built (scripts/build_native.sh)")
    pytest.skip("the compiled transport is not built (scripts/build_native.sh)")


@pytest.fixture(params=TRANSPORTS)
def mlp_server(mlp_engine: MLPEngine, request: pytest.FixtureRequest) -> Iterator[ServerThread]:
    if request.param == "native":
        require_native()
    cfg = worker_config(server={"transport": request.param})
    with ServerThread(cfg, mlp_engine) as server:
        yield server
