"""One worker in this process: HTTP, gRPC and metrics around a service and a batcher.

The in-process layout (tests, benchmarks, ``--engine-thread``): the batcher and an
engine thread live beside the event loop. A worker pod uses the multi-process
layout instead (supervisor.py); both serve the same protocol.

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
from concurrent.futures import ThreadPoolExecutor

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from infleet_worker.batch_queue import overload_of
from infleet_worker.batch_run import BatchOutcome
from infleet_worker.batcher import DynamicBatcher
from infleet_worker.cache.base import ResultCache
from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import Engine, Signature
from infleet_worker.gpu_metrics import GpuCollector
from infleet_worker.logs import event
from infleet_worker.metrics import BatchMetrics, RequestMetrics, ready_gauge
from infleet_worker.servers import Servers, bound_port, start_app
from infleet_worker.service import InferenceService, LocalGate

log = logging.getLogger("infleet_worker.lifecycle")


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
        self.engine = engine
        self.registry = registry if registry is not None else CollectorRegistry()
        name, version = cfg.model.name, cfg.model.version
        self.gate = LocalGate()
        self.ready_metric = ready_gauge(name, version, self.registry)
        self.registry.register(GpuCollector(name, version))
        self.batch_metrics = BatchMetrics(name, version, self.registry)
        self.service = InferenceService(
            cfg, RequestMetrics(name, version, self.registry), self.gate
        )
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="infleet-engine")
        signature = Signature.of(engine)
        b = cfg.batching
        max_batch = b.max_batch_size
        if engine.max_batch_size > 0:
            max_batch = min(max_batch, engine.max_batch_size)
        self.batcher = DynamicBatcher(
            engine,
            self.executor,
            max_batch_size=max_batch,
            max_queue_delay_us=b.max_queue_delay_microseconds,
            max_queue_size=b.max_queue_size,
            priority_levels=b.priority_levels,
            default_priority_level=b.default_priority_level,
            default_timeout_us=b.default_timeout_microseconds,
            shed_queue_depth=cfg.server.shed_queue_depth,
            overload=overload_of(cfg, engine.max_batch_size),
            outputs={o.name: o for o in signature.outputs},
            on_batch=self._on_batch,
        )
        self.batch_metrics.bind_queue_depth(lambda: self.batcher.queue_depth)
        self.service.bind(signature, self.batcher, cache)
        self.servers = Servers(self.service)
        self.metrics_port = 0
        self._metrics: web.AppRunner | None = None
        self._draining = False
        self._set_ready(False)

    @property
    def http_port(self) -> int:
        return self.servers.http_port

    @property
    def grpc_port(self) -> int:
        return self.servers.grpc_port

    def _on_batch(self, outcome: BatchOutcome) -> None:
        self.service.stats.on_batch(outcome.timing)
        self.batch_metrics.observe(outcome)

    def _set_ready(self, ready: bool) -> None:
        self.gate.ready = ready
        self.ready_metric.set(1 if ready else 0)

    async def start(self, warmup: bool = True) -> None:
        """Bind every port (live at once), warm the engine up, then become Ready."""
        s = self.cfg.server
        self._metrics = await start_app(metrics_app(self.registry), s.host, s.metrics_port)
        self.metrics_port = bound_port(self._metrics)
        await self.servers.start(s.host, s.http_port, s.grpc_port)
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
        if warmup:
            await asyncio.get_running_loop().run_in_executor(self.executor, self.engine.warmup)
        self.batcher.start()
        self._set_ready(True)
        event(log, "ready", "ready", model=self.cfg.model.name)

    async def drain(self, drain_seconds: float | None = None) -> None:
        """The SIGTERM sequence; returns when every accepted request has its answer."""
        if self._draining:
            return
        self._draining = True
        secs = self.cfg.server.drain_seconds if drain_seconds is None else drain_seconds
        self._set_ready(False)
        event(log, "drain", f"draining: not Ready, still serving for {secs}s", drain_seconds=secs)
        if secs > 0:
            await asyncio.sleep(secs)
        self.gate.accepting = False
        event(
            log,
            "drain_closed",
            f"taking no new requests; finishing {self.service.inflight} in flight",
            inflight=self.service.inflight,
        )
        await self.service.wait_idle()

    async def stop(self) -> None:
        """Close everything (after drain() for a graceful exit)."""
        self._set_ready(False)
        self.gate.accepting = False
        await self.servers.stop()
        await self.service.close()
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self.executor, self.engine.close)
        except Exception:
            log.exception("engine close failed")
        self.executor.shutdown(wait=False)
        if self._metrics is not None:
            await self._metrics.cleanup()
            self._metrics = None
        event(log, "shutdown", "shut down")


def metrics_app(registry: CollectorRegistry) -> web.Application:
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
