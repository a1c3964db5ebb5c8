"""gRPC for generation: ``inference.GRPCInferenceService`` with ``ModelStreamInfer`` as
a decoupled stream (one response per token), so tritonclient's streaming client works.

A request: input ``text_input`` (BYTES, shape [1]) and the sampling fields as request
parameters (``max_tokens``, ``temperature``, ...; Triton's ``timeout`` parameter is in
microseconds). Each response holds ``text_output`` (the new text) and the parameter
``triton_final_response`` (true on the last one, which also carries
``finish_reason``). Several requests may share one stream; each response carries its
request's id.
"""

from __future__ import annotations

import asyncio
import contextlib
import struct
from collections.abc import AsyncIterator
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from infleet_worker.generate.frontend import EngineFailed, Frontend, Unavailable
from infleet_worker.generate.params import BadRequest, check_fields, sampling_params
from infleet_worker.generate.triton_api import TRITON_FIELDS

ERRORS = (BadRequest, Unavailable, EngineFailed)


def _bytes_input(req: pb.ModelInferRequest) -> str:
    for i, tensor in enumerate(req.inputs):
        if tensor.name != "text_input":
            continue
        if req.raw_input_contents:
            raw = req.raw_input_contents[i]
            (size,) = struct.unpack_from("<I", raw)
            return raw[4 : 4 + size].decode()
        return tensor.contents.bytes_contents[0].decode()
    raise BadRequest("the request needs a BYTES input named text_input", "text_input")


def _params(req: pb.ModelInferRequest) -> dict[str, Any]:
    doc: dict[str, Any] = {}
    for name, p in req.parameters.items():
        kind = p.WhichOneof("parameter_choice")
        if kind is not None:
            doc[name] = getattr(p, kind)
    if "timeout" in doc:  # tritonclient sends microseconds
        doc["timeout"] = doc["timeout"] / 1e6
    if isinstance(doc.get("stop"), str):
        doc["stop"] = [doc["stop"]]
    return doc


class GenerateGrpc(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, fe: Frontend) -> None:
        self.fe = fe

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self.fe.ready)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        ok = request.name == self.fe.model and request.version in ("", self.fe.version)
        return pb.ModelReadyResponse(ready=ok and self.fe.ready)

    async def ServerMetadata(self, request: Any, context: Any) -> pb.ServerMetadataResponse:
        return pb.ServerMetadataResponse(name="infleet", version="0.1.0", extensions=["generate"])

    async def ModelMetadata(self, request: Any, context: Any) -> pb.ModelMetadataResponse:
        if request.name != self.fe.model:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown model {request.name}")
        resp = pb.ModelMetadataResponse(
            name=self.fe.model, versions=[self.fe.version], platform="infleet_generate"
        )
        resp.inputs.add(name="text_input", datatype="BYTES", shape=[1])
        resp.outputs.add(name="text_output", datatype="BYTES", shape=[1])
        return resp

    def _parse(self, req: pb.ModelInferRequest) -> tuple[list[int], Any]:
        if req.model_name != self.fe.model:
            raise BadRequest(f"unknown model {req.model_name}; this worker serves {self.fe.model}")
        body = _params(req)
        check_fields(body, set(), TRITON_FIELDS)
        ids = self.fe.encode(_bytes_input(req))
        logprobs = 0 if body.get("return_logprobs") else None
        return ids, sampling_params(
            body, self.fe.default_max_tokens, logprobs, self.fe.priority_levels
        )

    def _response(
        self, req: pb.ModelInferRequest, text: str, reason: str | None
    ) -> pb.ModelInferResponse:
        r = pb.ModelInferResponse(model_name=self.fe.model, model_version=self.fe.version)
        r.id = req.id
        r.outputs.add(name="text_output", datatype="BYTES", shape=[1])
        data = text.encode()
        r.raw_output_contents.append(struct.pack("<I", len(data)) + data)
        r.parameters["triton_final_response"].bool_param = reason is not None
        if reason is not None:
            r.parameters["finish_reason"].string_param = reason
        return r

    async def _generate(self, req: pb.ModelInferRequest) -> AsyncIterator[pb.ModelInferResponse]:
        ids, parsed = self._parse(req)
        with self.fe.request() as outcome:
            async with contextlib.aclosing(self.fe.stream(ids, parsed.params, outcome)) as s:
                async for out in s:
                    yield self._response(req, out.text, out.finish_reason)

    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        try:
            outs = [r async for r in self._generate(request)]
        except ERRORS as e:
            code = {
                BadRequest: grpc.StatusCode.INVALID_ARGUMENT,
                Unavailable: grpc.StatusCode.UNAVAILABLE,
            }
            await context.abort(code.get(type(e), grpc.StatusCode.INTERNAL), str(e))
        text = b"".join(r.raw_output_contents[0][4:] for r in outs).decode()
        final = outs[-1].parameters["finish_reason"].string_param
        return self._response(request, text, final)

    async def ModelStreamInfer(
        self, request_iterator: Any, context: Any
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        queue: asyncio.Queue[pb.ModelStreamInferResponse | None] = asyncio.Queue()
        tasks: set[asyncio.Task[None]] = set()

        async def one(req: pb.ModelInferRequest) -> None:
            try:
                async for r in self._generate(req):
                    await queue.put(pb.ModelStreamInferResponse(infer_response=r))
            except ERRORS as e:
                await queue.put(pb.ModelStreamInferResponse(error_message=str(e)))

        async def read() -> None:
            async for req in request_iterator:
                tasks.add(asyncio.create_task(one(req)))
            await asyncio.gather(*tasks)
            await queue.put(None)

        reader = asyncio.create_task(read())
        try:
            while (item := await queue.get()) is not None:
                yield item
        finally:  # the client went away: abort what still runs
            reader.cancel()
            for t in tasks:
                t.cancel()
            await asyncio.gather(reader, *tasks, return_exceptions=True)


def build_grpc(fe: Frontend, host: str, port: int) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(GenerateGrpc(fe), server)
    address = f"[{host}]" if ":" in host and not host.startswith("[") else host
    bound = server.add_insecure_port(f"{address}:{port}")
    if bound == 0:
        raise OSError(f"cannot bind gRPC port {host}:{port}")
    return server, bound
