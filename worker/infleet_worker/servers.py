"""Bind and close the HTTP and gRPC servers around one InferenceService.

Used by the in-process worker (lifecycle.py) and by each front-end process of a
pod (frontend.py), where ``reuse_port`` lets every front end listen on the same
ports and the kernel spread connections over them.
"""

from __future__ import annotations

import logging
import socket
from typing import Protocol

from aiohttp import web

from infleet_worker import native_transport
from infleet_worker.config import Transport
from infleet_worker.grpc_native import NativeGrpcServer
from infleet_worker.grpc_server import build_server
from infleet_worker.http_native import NativeHttpServer
from infleet_worker.http_server import HttpFrontend
from infleet_worker.service import InferenceService

log = logging.getLogger("infleet_worker.servers")


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


class Serving(Protocol):
    """A started-or-not server of one protocol, its port bound."""

    port: int

    async def start(self) -> None: ...

    async def stop(self, grace: float | None = None) -> None: ...


class GrpcioServer:
    """grpc.aio (grpcio's C core and its Python layer): the pure-Python transport."""

    def __init__(self, service: InferenceService, host: str, port: int, *, reuse_port: bool):
        self._server, self.port = build_server(service, host, port, reuse_port=reuse_port)

    async def start(self) -> None:
        await self._server.start()

    async def stop(self, grace: float | None = None) -> None:
        await self._server.stop(grace=grace)


class AiohttpServer:
    """aiohttp: the pure-Python HTTP transport."""

    def __init__(self, frontend: HttpFrontend, host: str, port: int, *, reuse_port: bool):
        self.frontend, self.host, self.port, self.reuse_port = frontend, host, port, reuse_port
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        self._runner = await start_app(
            self.frontend.app, self.host, self.port, reuse_port=self.reuse_port
        )
        self.port = bound_port(self._runner)

    async def stop(self, grace: float | None = None) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


def listening_socket(host: str, port: int, *, reuse_port: bool) -> socket.socket:
    if reuse_port:
        sock = reuse_port_socket(host, port)
    else:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    sock.listen(1024)
    return sock


def use_native(service: InferenceService) -> bool:
    """server.transport: ``auto`` is the compiled transport when it is built
    (scripts/build_native.sh), aiohttp and grpcio otherwise."""
    choice = service.cfg.server.transport
    if choice == Transport.AUTO and not native_transport.available():
        log.info("HTTP on aiohttp, gRPC on grpcio: the compiled transport is not built")
    return choice == Transport.NATIVE or (choice == Transport.AUTO and native_transport.available())


class Servers:
    """HTTP and gRPC for one service; ports are known after start()."""

    def __init__(self, service: InferenceService, *, reuse_port: bool = False) -> None:
        self.service = service
        self.reuse_port = reuse_port
        self.http_port = 0
        self.grpc_port = 0
        self._http: Serving | None = None
        self._grpc: Serving | None = None

    async def start(self, host: str, http_port: int, grpc_port: int) -> None:
        frontend, reuse = HttpFrontend(self.service), self.reuse_port
        if use_native(self.service):
            with listening_socket(host, http_port, reuse_port=reuse) as sock:
                self._http = NativeHttpServer(frontend, sock)
            with listening_socket(host, grpc_port, reuse_port=reuse) as sock:
                self._grpc = NativeGrpcServer(self.service, sock)
        else:
            self._http = AiohttpServer(frontend, host, http_port, reuse_port=reuse)
            self._grpc = GrpcioServer(self.service, host, grpc_port, reuse_port=reuse)
        await self._http.start()
        await self._grpc.start()
        self.http_port, self.grpc_port = self._http.port, self._grpc.port

    async def stop(self, grace: float = 5.0) -> None:
        if self._grpc is not None:
            await self._grpc.stop(grace=grace)
            self._grpc = None
        if self._http is not None:
            await self._http.stop(grace=grace)
            self._http = None
