"""Start, drain and stop one worker: HTTP, gRPC and metrics servers around a service.

In-process use (tests, benchmarks)::

    async with serve(cfg, engine=engine) as worker:
        worker.http_port, worker.grpc_port, worker.metrics_port  # bound ports (0 = any)

Shutdown (SIGTERM): Ready goes false at once, requests are still taken for
``server.drain_seconds`` (Kubernetes removes the endpoint later than it sends the
signal), then new requests get 503 / UNAVAILABLE while everything already
accepted finishes; then the servers close.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from infleet_worker.cache.base import ResultCache
from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import Engine
from infleet_worker.grpc_server import build_server
from infleet_worker.http_server import HttpFrontend
from infleet_worker.logs import event
from infleet_worker.metrics import Metrics
from infleet_worker.service import InferenceService

log = logging.getLogger("infleet_worker.lifecycle")


def _port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            return int(addr[1])
    raise OSError("server bound no TCP address")


class Worker:
    """One model served over HTTP, gRPC and Prometheus; ports are known after start()."""

    def __init__(
        self,
        cfg: WorkerConfig,
        engine: Engine,
        cache: ResultCache | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.cfg = cfg
        self.metrics = Metrics(cfg.model.name, cfg.model.version, registry)
        self.service = InferenceService(cfg, engine, cache, self.metrics)
        self.http_port = 0
        self.grpc_port = 0
        self.metrics_port = 0
        self._http: web.AppRunner | None = None
        self._metrics: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None
        self._stopped = asyncio.Event()
        self._draining = False

    @property
    def registry(self) -> CollectorRegistry:
        return self.metrics.registry

    async def start(self, warmup: bool = True) -> None:
        """Bind every port (live at once), warm the engine up, then become Ready."""
        s = self.cfg.server
        self._metrics = await self._start_app(_metrics_app(self.registry), s.host, s.metrics_port)
        self.metrics_port = _port(self._metrics)
        http = HttpFrontend(self.service)
        self._http = await self._start_app(http.app, s.host, s.http_port)
        self.http_port = _port(self._http)
        self._grpc, self.grpc_port = build_server(self.service, s.host, s.grpc_port)
        await self._grpc.start()
        event(
            log,
            "listening",
            f"listening http={self.http_port} grpc={self.grpc_port} "
            f"metrics={self.metrics_port} model={self.cfg.model.name}:{self.cfg.model.version}",
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
            model=self.cfg.model.name,
            version=self.cfg.model.version,
            source=self.cfg.model.source,
        )
        await self.service.start(warmup=warmup)
        event(log, "ready", "ready", model=self.cfg.model.name)

    async def _start_app(self, app: web.Application, host: str, port: int) -> web.AppRunner:
        runner = web.AppRunner(
            app,
            access_log=None,
            handle_signals=False,
            shutdown_timeout=30,
            auto_decompress=False,  # the infer handler inflates, with a size bound
        )
        await runner.setup()
        site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        return runner

    async def drain(self, drain_seconds: float | None = None) -> None:
        """The SIGTERM sequence; returns when every accepted request has its answer."""
        if self._draining:
            return
        self._draining = True
        secs = self.cfg.server.drain_seconds if drain_seconds is None else drain_seconds
        self.service.set_ready(False)
        event(log, "drain", f"draining: not Ready, still serving for {secs}s", drain_seconds=secs)
        if secs > 0:
            await asyncio.sleep(secs)
        self.service.stop_accepting()
        event(
            log,
            "drain_closed",
            f"taking no new requests; finishing {self.service.inflight} in flight",
            inflight=self.service.inflight,
        )
        await self.service.wait_idle()

    async def stop(self) -> None:
        """Close everything (after drain() for a graceful exit)."""
        self.service.stop_accepting()
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
            self._grpc = None
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
        await self.service.close()
        if self._metrics is not None:
            await self._metrics.cleanup()
            self._metrics = None
        event(log, "shutdown", "shut down")
        self._stopped.set()


def _metrics_app(registry: CollectorRegistry) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


@contextlib.asynccontextmanager
async def serve(
    cfg: WorkerConfig,
    engine: Engine,
    cache: ResultCache | None = None,
    *,
    warmup: bool = True,
    registry: CollectorRegistry | None = None,
) -> AsyncIterator[Worker]:
    """Run a worker in this event loop; yields it Ready, with its bound ports."""
    worker = Worker(cfg, engine, cache, registry)
    try:
        await worker.start(warmup=warmup)
        yield worker
    finally:
        await worker.stop()
