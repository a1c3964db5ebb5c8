"""KServe v2 HTTP on the compiled transport (the ``infleet_transport`` extension).

The extension owns the listening socket and HTTP/1.1 on its own thread. Inference
requests (``POST /v2/models/{m}[/versions/{v}]/infer``) reach this module in bulk
through its eventfd and run ``HttpFrontend.infer_body``, the same code the aiohttp
route runs; answers go back a loop turn at a time. Every other route (health,
metadata, statistics, OpenAI) is passed through by the extension to the worker's
aiohttp app on a private Unix socket: one implementation of each, and only the
request that matters for throughput skips aiohttp (docs/worker.md, "The transports").
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import tempfile
from urllib.parse import unquote

from aiohttp import web

from infleet_worker.http_server import HttpFrontend
from infleet_worker.native_transport import NativeCalls, native, require
from infleet_worker.protocol.errors import InferError

log = logging.getLogger("infleet_worker.http")

_JSON = "application/json"
Answer = tuple[int, int, str, int | None, bytes]


def _error(call: int, status: int, message: str) -> Answer:
    return (call, status, _JSON, None, json.dumps({"error": message}).encode())


def model_of(path: str) -> tuple[str, str] | None:
    """(model, version) of /v2/models/{m}/infer or /v2/models/{m}/versions/{v}/infer."""
    parts = path.split("/")
    if len(parts) == 5:
        return unquote(parts[3]), ""
    if len(parts) == 7 and parts[4] == "versions":
        return unquote(parts[3]), unquote(parts[5])
    return None


class NativeHttpServer(NativeCalls[Answer]):
    """The worker's HTTP API on a bound TCP socket, served by the compiled transport."""

    def __init__(self, frontend: HttpFrontend, sock: socket.socket, *, threads: int = 1) -> None:
        require()
        self.frontend = frontend
        self.port = int(sock.getsockname()[1])
        self._dir = tempfile.mkdtemp(prefix="infleet-http-")
        self._routes = os.path.join(self._dir, "routes.sock")
        self._runner = web.AppRunner(
            frontend.app, access_log=None, handle_signals=False, auto_decompress=False
        )
        limit = frontend.max_request_bytes
        super().__init__(native.Server(sock.fileno(), "http", limit, [], self._routes, threads))

    async def start(self) -> None:
        await self._runner.setup()
        await web.UnixSite(self._runner, self._routes).start()
        self._listen()

    def _drain(self) -> None:
        for call, _kind, path, body, headers in self._server.take():
            encoding, header_length = headers or (None, None)
            self._spawn(self._infer(call, path or "", body or b"", encoding, header_length))

    async def _infer(
        self, call: int, path: str, body: bytes, encoding: str | None, header_length: str | None
    ) -> None:
        model = model_of(path)
        if model is None:
            answer = _error(call, 404, "404: Not Found")  # as aiohttp words it
        else:
            try:
                out, content_type, hlen = await self.frontend.infer_body(
                    *model, body, encoding, header_length
                )
                answer = (call, 200, content_type, hlen, out)
            except InferError as e:
                answer = _error(call, e.http_status, e.message)
            except Exception as e:  # a bug: answer, log, keep serving
                log.exception("unhandled error on POST %s", path)
                answer = _error(call, 500, f"internal error: {e}")
        self._answer(answer)

    def _hand_over(self, answers: list[Answer]) -> None:
        self._server.respond_many(answers)

    async def stop(self, grace: float | None = None) -> None:
        """Stop accepting; requests in flight get up to ``grace`` seconds."""
        await self._stop_calls(grace)
        await self._runner.cleanup()
        shutil.rmtree(self._dir, ignore_errors=True)
