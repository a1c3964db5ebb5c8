"""gRPC front end: ``inference.GRPCInferenceService`` on grpc.aio with tritonclient's stubs."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import grpc
from google.protobuf import json_format
from tritonclient.grpc import model_config_pb2, service_pb2_grpc
from tritonclient.grpc import service_pb2 as pb

from infleet_worker.protocol.errors import InferError
from infleet_worker.protocol.grpc_codec import decode_request, encode_response
from infleet_worker.service import InferenceService

log = logging.getLogger("infleet_worker.grpc")

INT32_MAX = 2**31 - 1  # tritonclient's MAX_GRPC_MESSAGE_SIZE


class GrpcFrontend(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: InferenceService) -> None:
        self.service = service
        self._config: pb.ModelConfigResponse | None = None

    async def _abort(self, context: grpc.aio.ServicerContext, e: InferError) -> Any:
        await context.abort(e.grpc_code, e.message)

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.service.ready)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self.service.model_ready(request.name, request.version))

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(**self.service.server_metadata())

    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        try:
            self.service.check_model(request.name, request.version)
            doc = self.service.model_metadata()
        except InferError as e:
            await self._abort(context, e)
        # TensorMetadata has no parameters field: tensors' domains reach gRPC clients
        # through ModelConfig.parameters ("domain.<tensor>") instead.
        return json_format.ParseDict(doc, pb.ModelMetadataResponse(), ignore_unknown_fields=True)

    async def ModelConfig(self, request: Any, context: Any) -> pb.ModelConfigResponse:
        try:
            self.service.check_model(request.name, request.version)
            if self._config is None:
                doc = self.service.model_config()
                cfg = json_format.ParseDict(doc, model_config_pb2.ModelConfig())
                self._config = pb.ModelConfigResponse(config=cfg)
        except InferError as e:
            await self._abort(context, e)
        return self._config

    async def ModelStatistics(self, request: Any, context: Any) -> pb.ModelStatisticsResponse:
        try:
            doc = await self.service.model_statistics(request.name, request.version)
        except InferError as e:
            await self._abort(context, e)
        return json_format.ParseDict(doc, pb.ModelStatisticsResponse())

    async def RepositoryIndex(self, request: Any, context: Any) -> pb.RepositoryIndexResponse:
        resp = pb.RepositoryIndexResponse()
        for m in self.service.repository_index():
            resp.models.add(**m)
        return resp

    async def _infer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        svc = self.service
        req = decode_request(request, svc.model_version)
        result = await svc.infer(req)
        try:
            return encode_response(result, req)
        finally:
            result.done()

    async def ModelInfer(
        self, request: pb.ModelInferRequest, context: grpc.aio.ServicerContext
    ) -> pb.ModelInferResponse:
        try:
            return await self._infer(request)
        except InferError as e:
            await self._abort(context, e)
            raise  # unreachable: abort raises

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Requests run concurrently (so they batch); answers go out as they finish."""
        out: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        pending: set[asyncio.Task[None]] = set()

        async def one(request: pb.ModelInferRequest) -> None:
            try:
                resp = await self._infer(request)
                out.put_nowait(pb.ModelStreamInferResponse(infer_response=resp))
            except InferError as e:
                out.put_nowait(_stream_error(request, e.message))
            except Exception as e:  # never let one request kill the stream
                log.exception("stream request failed")
                out.put_nowait(_stream_error(request, f"internal error: {e}"))

        async def reader() -> None:
            try:
                async for request in request_iterator:
                    task = asyncio.create_task(one(request))
                    pending.add(task)
                    task.add_done_callback(pending.discard)
                if pending:
                    await asyncio.gather(*list(pending), return_exceptions=True)
            finally:
                out.put_nowait(None)

        read_task = asyncio.create_task(reader())
        try:
            while True:
                item = await out.get()
                if item is None:
                    break
                yield item
        finally:
            if not read_task.done():
                read_task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await read_task


def _stream_error(request: pb.ModelInferRequest, message: str) -> pb.ModelStreamInferResponse:
    return pb.ModelStreamInferResponse(
        error_message=message,
        infer_response=pb.ModelInferResponse(
            model_name=request.model_name, model_version=request.model_version, id=request.id
        ),
    )


def build_server(
    service: InferenceService, host: str, port: int, *, reuse_port: bool = False
) -> tuple[grpc.aio.Server, int]:
    """A grpc.aio server with the service registered and its port bound (not started).

    ``reuse_port``: the pod's front-end processes share the port (SO_REUSEPORT) and
    the kernel spreads connections over them."""
    limit = min(service.cfg.server.max_request_bytes, INT32_MAX)
    server = grpc.aio.server(
        options=[
            ("grpc.max_send_message_length", INT32_MAX),
            ("grpc.max_receive_message_length", limit),
            ("grpc.so_reuseport", 1 if reuse_port else 0),
        ]
    )
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(GrpcFrontend(service), server)
    bound = server.add_insecure_port(f"{_host(host)}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port}")
    return server, bound


def _host(host: str) -> str:
    return f"[{host}]" if ":" in host and not host.startswith("[") else host
