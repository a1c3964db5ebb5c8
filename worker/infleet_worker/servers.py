"""Bind and close the HTTP and gRPC servers around one InferenceService.

Used by the in-process worker (lifecycle.py) and by each front-end process of a
pod (frontend.py), where ``reuse_port`` lets every front end listen on the same
ports and the kernel spread connections over them.
"""

from __future__ import annotations

import socket

import grpc
from aiohttp import web

from infleet_worker.grpc_server import build_server
from infleet_worker.http_server import HttpFrontend
from infleet_worker.service import InferenceService


def bound_port(runner: web.AppRunner) -> int:
    for addr in runner.addresses:
        if isinstance(addr, tuple):
            return int(addr[1])
    raise OSError("server bound no TCP address")


def reuse_port_socket(host: str, port: int) -> socket.socket:
    """A TCP socket bound with SO_REUSEPORT (not listening): holds a port for a pod's
    front ends, and is what each of them listens on."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    sock.bind((host, port))
    return sock


async def start_app(
    app: web.Application, host: str, port: int, *, reuse_port: bool = False
) -> web.AppRunner:
    runner = web.AppRunner(
        app,
        access_log=None,
        handle_signals=False,
        shutdown_timeout=30,
        auto_decompress=False,  # the infer handler inflates, with a size bound
    )
    await runner.setup()
    site: web.BaseSite
    if reuse_port:
        sock = reuse_port_socket(host, port)
        sock.listen(1024)
        site = web.SockSite(runner, sock)
    else:
        site = web.TCPSite(runner, host, port, backlog=1024, reuse_address=True)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    return runner


class Servers:
    """HTTP and gRPC for one service; ports are known after start()."""

    def __init__(self, service: InferenceService, *, reuse_port: bool = False) -> None:
        self.service = service
        self.reuse_port = reuse_port
        self.http_port = 0
        self.grpc_port = 0
        self._http: web.AppRunner | None = None
        self._grpc: grpc.aio.Server | None = None

    async def start(self, host: str, http_port: int, grpc_port: int) -> None:
        http = HttpFrontend(self.service)
        self._http = await start_app(http.app, host, http_port, reuse_port=self.reuse_port)
        self.http_port = bound_port(self._http)
        self._grpc, self.grpc_port = build_server(
            self.service, host, grpc_port, reuse_port=self.reuse_port
        )
        await self._grpc.start()

    async def stop(self, grace: float = 5.0) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=grace)
            self._grpc = None
        if self._http is not None:
            await self._http.cleanup()
            self._http = None
