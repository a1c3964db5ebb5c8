"""The generation worker's process: load, warm up, bind HTTP and metrics, Ready, drain.

``run_generate_worker(cfg)`` is the entry the worker CLI dispatches to for a
generative model source. SIGTERM: Ready goes false at once, requests are still taken
for ``server.drainSeconds``, then new ones get 503 while the running sequences
finish; exit 0. In-process use (tests, benchmarks)::

    async with serve_generate(cfg) as server:
        server.http_port, server.grpc_port, server.metrics_port
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator

import grpc
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import ModelLoadError
from infleet_worker.generate.config import ConfigError
from infleet_worker.generate.engine import GenerateEngine
from infleet_worker.generate.frontend import Frontend
from infleet_worker.generate.grpc_stream import build_grpc
from infleet_worker.generate.http import build_app
from infleet_worker.generate.loader import build_core
from infleet_worker.generate.metrics import GenerateMetrics
from infleet_worker.generate.output_cache import build_generation_cache
from infleet_worker.logs import event
from infleet_worker.metrics import BatchMetrics, RequestMetrics, ready_gauge

log = logging.getLogger("infleet_worker.generate.server")


class GenerateServer:
    def __init__(self, cfg: WorkerConfig, registry: CollectorRegistry | None = None) -> None:
        self.cfg = cfg
        self.registry = registry if registry is not None else CollectorRegistry()
        self.http_port = 0
        self.grpc_port = 0
        self.metrics_port = 0
        self._grpc: grpc.aio.Server | None = None
        self.engine: GenerateEngine | None = None
        self.frontend: Frontend | None = None
        self._runners: list[web.AppRunner] = []

    async def start(self) -> None:
        """Load and warm up off the event loop, bind both ports, then become Ready."""
        cfg, m = self.cfg, self.cfg.model
        batch = BatchMetrics(m.name, m.version, self.registry)  # queue depth, sequences/step
        gm = GenerateMetrics(m.name, m.version, self.registry, batch)
        loop = asyncio.get_running_loop()
        core = await loop.run_in_executor(None, build_core, cfg, gm)
        self.engine = GenerateEngine(core)
        self.engine.start()
        self.frontend = Frontend(
            self.engine,
            core.tokenizer,
            m.name,
            m.version,
            RequestMetrics(m.name, m.version, self.registry),
            batch.queue_depth,
            ready_gauge(m.name, m.version, self.registry),
            priority_levels=cfg.batching.priority_levels,
        )
        self.frontend.cache = build_generation_cache(cfg, self.registry)
        s = cfg.server
        metrics_app = web.Application()
        metrics_app.router.add_get("/metrics", self._metrics)
        self.metrics_port = await self._bind(metrics_app, s.host, s.metrics_port)
        self.http_port = await self._bind(
            build_app(self.frontend, s.max_request_bytes), s.host, s.http_port
        )
        self._grpc, self.grpc_port = build_grpc(self.frontend, s.host, s.grpc_port)
        await self._grpc.start()
        self.frontend.set_ready(True)
        event(
            log,
            "ready",
            f"ready: generating with {m.source} http={self.http_port} metrics={self.metrics_port}",
            model=m.name,
            http_port=self.http_port,
            grpc_port=self.grpc_port,
            metrics_port=self.metrics_port,
        )

    async def _metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def _bind(self, app: web.Application, host: str, port: int) -> int:
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, handler_cancellation=True
        )
        await runner.setup()
        self._runners.append(runner)
        site = web.TCPSite(runner, host, port, reuse_address=True)
        await site.start()
        for addr in runner.addresses:
            if isinstance(addr, tuple):
                return int(addr[1])
        raise OSError("server bound no TCP address")

    async def drain(self, drain_seconds: float | None = None) -> None:
        """Not Ready; still serving for drain_seconds; then 503 for new requests while
        every accepted one finishes."""
        fe = self.frontend
        if fe is None:
            return
        secs = self.cfg.server.drain_seconds if drain_seconds is None else drain_seconds
        fe.set_ready(False)
        event(log, "drain", f"draining: not Ready, still serving for {secs}s")
        if secs > 0:
            await asyncio.sleep(secs)
        fe.accepting = False
        event(log, "drain_closed", f"taking no new requests; finishing {fe.inflight}")
        await fe.wait_idle()

    async def stop(self) -> None:
        if self.frontend is not None:
            self.frontend.accepting = False
            self.frontend.set_ready(False)
        if self._grpc is not None:
            await self._grpc.stop(grace=5)
            self._grpc = None
        for runner in reversed(self._runners):
            await runner.cleanup()
        self._runners.clear()
        if self.engine is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.engine.stop)
            self.engine = None
        if self.frontend is not None and self.frontend.cache is not None:
            await self.frontend.cache.close()
        event(log, "shutdown", "shut down")


@contextlib.asynccontextmanager
async def serve_generate(
    cfg: WorkerConfig, registry: CollectorRegistry | None = None
) -> AsyncIterator[GenerateServer]:
    server = GenerateServer(cfg, registry)
    try:
        await server.start()
        yield server
    finally:
        await server.stop()


async def run_generate_worker(cfg: WorkerConfig) -> int:
    """Serve until SIGTERM/SIGINT (drain, exit 0); 1 when the model cannot load or the
    engine dies (the pod restarts)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    event(log, "startup", f"starting generative model {cfg.model.name} from {cfg.model.source}")
    server = GenerateServer(cfg)
    waiter = asyncio.create_task(stop.wait())
    try:
        start = asyncio.create_task(server.start())
        await asyncio.wait({start, waiter}, return_when=asyncio.FIRST_COMPLETED)
        if not start.done():  # signalled while loading
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
            return 0
        start.result()
        assert server.engine is not None
        while not stop.is_set():
            if server.engine.dead.is_set():
                log.error("the generation engine died; exiting so the pod restarts")
                return 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), 0.5)
        event(log, "signal", "termination signal received")
        await server.drain()
        return 0
    except (ConfigError, ModelLoadError, ValueError) as e:
        log.error("model load failed: %s", e, extra={"event": "model_load_failed"})
        return 1
    except OSError as e:
        log.error("cannot start servers: %s", e, extra={"event": "startup_failed"})
        return 1
    finally:
        waiter.cancel()
        await server.stop()
