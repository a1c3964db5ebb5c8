"""One front-end process of a worker pod: HTTP and gRPC on the pod's shared ports.

``python -m infleet_worker.frontend --config F --index I --socket S --state-fd N
--internal P --supervisor Q``, started by the supervisor. It binds the ports
(SO_REUSEPORT: every front end listens on the same ones; the kernel spreads
connections), answers live at once and Ready once the supervisor says so, and
does the transport work: decode, validate, cache look-up and write, encode.
Requests go to the engine core through shared memory (core/client.py).

It ignores SIGINT/SIGTERM (the supervisor drains the pod) and stops when the
supervisor writes ``stop`` on its stdin, or closes it (the supervisor is gone).
Its own metrics and statistics are served on a Unix socket (``--internal``) for
the supervisor to sum; ``/v2/models/stats`` asks the supervisor for the pod's.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import signal
import sys
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from infleet_worker.config import CacheMode, WorkerConfig
from infleet_worker.core.client import CoreClient
from infleet_worker.core.state import SharedState
from infleet_worker.heap import settle_heap
from infleet_worker.logs import event, setup_logging
from infleet_worker.metrics import RequestMetrics
from infleet_worker.servers import Servers
from infleet_worker.service import InferenceService

log = logging.getLogger("infleet_worker.frontend")

ARENA_BYTES = 32 * 1024 * 1024  # each way; larger tensors travel inline


class SharedGate:
    """Ready and accepting as the supervisor says; in-flight published for its drain."""

    def __init__(self, state: SharedState, index: int, client: CoreClient) -> None:
        self.state = state
        self.index = index
        self.client = client

    @property
    def ready(self) -> bool:
        return self.state.ready and self.client.connected

    @property
    def accepting(self) -> bool:
        return self.state.accepting

    def count(self, inflight: int) -> None:
        self.state.inflight[self.index] = inflight


def internal_app(registry: CollectorRegistry, service: InferenceService) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def stats(request: web.Request) -> web.Response:
        return web.json_response(service.stats.to_json())

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/stats", stats)
    return app


async def unix_get(path: str, url: str) -> bytes:
    """GET ``url`` from the HTTP server on the Unix socket ``path`` (a pod's internals)."""
    async with (
        aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=path)) as session,
        session.get(f"http://local{url}", timeout=aiohttp.ClientTimeout(total=10)) as resp,
    ):
        resp.raise_for_status()
        return await resp.read()


async def unix_get_json(path: str, url: str) -> Any:
    return json.loads(await unix_get(path, url))


async def _stop_requested() -> None:
    """Until the supervisor writes a line on our stdin or closes it."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.readline)


async def run(args: argparse.Namespace) -> int:
    cfg = WorkerConfig.from_file(args.config)
    state = SharedState(args.state_fd)
    registry = CollectorRegistry()
    name, version = cfg.model.name, cfg.model.version
    client = CoreClient(
        args.socket,
        args.index,
        state,
        cfg.batching,
        shed_queue_depth=cfg.server.shed_queue_depth,
        arena_bytes=ARENA_BYTES,
    )
    service = InferenceService(
        cfg, RequestMetrics(name, version, registry), SharedGate(state, args.index, client)
    )

    async def pod_stats() -> dict[str, Any]:
        doc: dict[str, Any] = await unix_get_json(args.supervisor, "/stats")
        return doc

    service.stats_source = pod_stats
    s = cfg.server
    servers = Servers(service, reuse_port=True)
    await servers.start(s.host, s.http_port, s.grpc_port)
    internal = web.AppRunner(internal_app(registry, service), access_log=None)
    await internal.setup()
    await web.UnixSite(internal, args.internal).start()
    stop = asyncio.create_task(_stop_requested())
    try:
        connect = asyncio.create_task(client.connect(timeout=24 * 3600, alive=lambda: True))
        await asyncio.wait({connect, stop}, return_when=asyncio.FIRST_COMPLETED)
        if connect.done():
            signature = connect.result()
            cache = None
            if cfg.cache.mode != CacheMode.OFF:
                from infleet_worker.cache.factory import build_cache

                cache = build_cache(cfg, registry, row_independent=signature.row_independent)
            service.bind(signature, client, cache)
            settle_heap()
            event(log, "frontend_ready", f"front end {args.index} bound to the engine core")
        else:
            connect.cancel()
        await stop
    finally:
        await servers.stop(grace=5)
        await service.close()
        await internal.cleanup()
        client.close()
    return 0


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="infleet-frontend")
    p.add_argument("--config", required=True)
    p.add_argument("--index", type=int, required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("--state-fd", type=int, required=True)
    p.add_argument("--internal", required=True)
    p.add_argument("--supervisor", required=True)
    args = p.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cfg = WorkerConfig.from_file(args.config)
    setup_logging(cfg.server.log_format.value, cfg.server.log_level)
    sys.exit(asyncio.run(run(args)))


if __name__ == "__main__":
    main()
