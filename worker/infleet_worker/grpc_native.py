"""gRPC on the compiled transport (the ``infleet_transport`` extension, worker/native).

The extension owns the listening socket, HTTP/2 and gRPC's message framing on its
own threads; this module runs the same servicer as grpc.aio (grpc_server.GrpcFrontend)
on the event loop. Calls arrive in bulk: the extension's eventfd turns readable,
``take()`` hands over every call queued since, and each answer is one call back.
Python's cost per request is the protobuf decode, the service and the encode; the
transport's own work runs beside it, outside the GIL (docs/worker.md, "The gRPC
transport").
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, NoReturn

import grpc
from google.protobuf.message import DecodeError, Message
from tritonclient.grpc import service_pb2 as pb

from infleet_worker.grpc_server import INT32_MAX, GrpcFrontend
from infleet_worker.native_transport import NativeCalls, native, require
from infleet_worker.service import InferenceService

log = logging.getLogger("infleet_worker.grpc")

SERVICE = "/inference.GRPCInferenceService/"
STREAM_PATH = SERVICE + "ModelStreamInfer"
UNIMPLEMENTED = grpc.StatusCode.UNIMPLEMENTED.value[0]
INTERNAL = grpc.StatusCode.INTERNAL.value[0]
UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]
CANCELLED = grpc.StatusCode.CANCELLED.value[0]

Handler = Callable[[Any, Any], Awaitable[Message]]


class _Abort(Exception):
    def __init__(self, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.code = code.value[0]
        self.message = message


class _Context:
    """The part of grpc.aio.ServicerContext that GrpcFrontend uses."""

    async def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise _Abort(code, details)


_CONTEXT = _Context()


def _unary_methods(f: GrpcFrontend) -> dict[str, tuple[type[Message], Handler]]:
    return {
        SERVICE + "ServerLive": (pb.ServerLiveRequest, f.ServerLive),
        SERVICE + "ServerReady": (pb.ServerReadyRequest, f.ServerReady),
        SERVICE + "ModelReady": (pb.ModelReadyRequest, f.ModelReady),
        SERVICE + "ServerMetadata": (pb.ServerMetadataRequest, f.ServerMetadata),
        SERVICE + "ModelMetadata": (pb.ModelMetadataRequest, f.ModelMetadata),
        SERVICE + "ModelConfig": (pb.ModelConfigRequest, f.ModelConfig),
        SERVICE + "ModelStatistics": (pb.ModelStatisticsRequest, f.ModelStatistics),
        SERVICE + "RepositoryIndex": (pb.RepositoryIndexRequest, f.RepositoryIndex),
        SERVICE + "ModelInfer": (pb.ModelInferRequest, f.ModelInfer),
    }


class NativeGrpcServer(NativeCalls[tuple[int, bytes]]):
    """GRPCInferenceService on a bound TCP socket, served by the compiled transport."""

    def __init__(self, service: InferenceService, sock: socket.socket, *, threads: int = 1) -> None:
        require()
        self.frontend = GrpcFrontend(service)
        self.port = int(sock.getsockname()[1])
        limit = min(service.cfg.server.max_request_bytes, INT32_MAX)
        super().__init__(native.Server(sock.fileno(), "grpc", limit, [STREAM_PATH], None, threads))
        self._methods = _unary_methods(self.frontend)
        self._streams: dict[int, tuple[asyncio.Queue[bytes | None], asyncio.Task[None]]] = {}

    async def start(self) -> None:
        self._listen()

    def _drain(self) -> None:
        for call, kind, path, payload, _headers in self._server.take():
            if kind == native.UNARY:
                self._spawn(self._unary(call, path or "", payload or b""))
            elif kind == native.OPEN:
                queue: asyncio.Queue[bytes | None] = asyncio.Queue()
                self._streams[call] = (queue, self._spawn(self._stream(call, queue)))
            elif kind in (native.MESSAGE, native.END):
                entry = self._streams.get(call)
                if entry is not None:
                    entry[0].put_nowait(payload)
            elif kind == native.CANCEL:
                entry = self._streams.pop(call, None)
                if entry is not None:
                    entry[1].cancel()

    async def _unary(self, call: int, path: str, payload: bytes) -> None:
        entry = self._methods.get(path)
        if entry is None:
            self._server.fail(call, UNIMPLEMENTED, f"Method not found: {path}")
            return
        request_type, handler = entry
        try:
            response = await handler(request_type.FromString(payload), _CONTEXT)
        except _Abort as a:
            self._server.fail(call, a.code, a.message)
            return
        except DecodeError as e:
            self._server.fail(call, INTERNAL, f"cannot parse the request message: {e}")
            return
        except Exception as e:
            log.exception("gRPC %s failed", path)
            self._server.fail(call, UNKNOWN, f"unexpected {type(e).__name__}: {e}")
            return
        self._answer((call, response.SerializeToString()))

    def _hand_over(self, answers: list[tuple[int, bytes]]) -> None:
        self._server.reply_many(answers)

    async def _stream(self, call: int, queue: asyncio.Queue[bytes | None]) -> None:
        async def requests() -> AsyncIterator[pb.ModelInferRequest]:
            while (payload := await queue.get()) is not None:
                yield pb.ModelInferRequest.FromString(payload)

        try:
            async for response in self.frontend.ModelStreamInfer(requests(), _CONTEXT):
                self._server.send(call, response.SerializeToString())
            self._server.finish(call, 0, "")
        except asyncio.CancelledError:
            self._server.finish(call, CANCELLED, "cancelled")
        except DecodeError as e:
            self._server.finish(call, INTERNAL, f"cannot parse a request message: {e}")
        except Exception as e:
            log.exception("gRPC stream failed")
            self._server.finish(call, UNKNOWN, f"unexpected {type(e).__name__}: {e}")
        finally:
            self._streams.pop(call, None)

    async def stop(self, grace: float | None = None) -> None:
        """GOAWAY to every connection; calls in flight get up to ``grace`` seconds."""
        await self._stop_calls(grace)
