"""The Python gRPC floor: a KServe v2 gRPC server that does nothing but answer.

``ModelInfer`` returns zeros of the right shape without batching or a model, so
what it costs per request is grpcio's own machinery plus a minimal protobuf
reply: the least any server built on grpcio can spend. ``bench/serving.py
--serve-floor`` measures it in the same run as infleet and Triton; when the floor
itself is slower than Triton with a real model, no grpcio-based front end can
reach Triton's gRPC throughput on that machine.

    python bench/grpc_floor.py --port 8001 --width 256 [--server aio|sync]
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc


class Replies:
    """Zero outputs per batch size, encoded once."""

    def __init__(self, model: str, output: str, width: int) -> None:
        self.model, self.output, self.width = model, output, width
        self._raw: dict[int, bytes] = {}

    def answer(self, request: pb.ModelInferRequest) -> pb.ModelInferResponse:
        rows = int(request.inputs[0].shape[0]) if request.inputs else 1
        raw = self._raw.get(rows)
        if raw is None:
            raw = self._raw[rows] = bytes(4 * rows * self.width)
        resp = pb.ModelInferResponse(model_name=self.model, id=request.id)
        o = resp.outputs.add()
        o.name, o.datatype = self.output, "FP32"
        o.shape.extend((rows, self.width))
        resp.raw_output_contents.append(raw)
        return resp


class AioFloor(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, replies: Replies) -> None:
        self.replies = replies

    async def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    async def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    async def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=True)

    async def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        return self.replies.answer(request)


class SyncFloor(service_pb2_grpc.GRPCInferenceServiceServicer):
    def __init__(self, replies: Replies) -> None:
        self.replies = replies

    def ServerLive(self, request: Any, context: Any) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=True)

    def ServerReady(self, request: Any, context: Any) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=True)

    def ModelReady(self, request: Any, context: Any) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=True)

    def ModelInfer(self, request: Any, context: Any) -> pb.ModelInferResponse:
        return self.replies.answer(request)


async def serve_aio(address: str, replies: Replies) -> None:
    server = grpc.aio.server()
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(AioFloor(replies), server)
    server.add_insecure_port(address)
    await server.start()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop(grace=1)


def serve_sync(address: str, replies: Replies, threads: int) -> None:
    server = grpc.server(ThreadPoolExecutor(max_workers=threads))
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(SyncFloor(replies), server)
    server.add_insecure_port(address)
    server.start()
    signal.signal(signal.SIGTERM, lambda *_: server.stop(grace=1))
    server.wait_for_termination()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--model", default="mlp")
    p.add_argument("--output", default="output")
    p.add_argument("--width", type=int, default=256)
    p.add_argument("--server", choices=("aio", "sync"), default="aio")
    p.add_argument("--threads", type=int, default=64, help="sync server: handler threads")
    args = p.parse_args(argv)
    replies = Replies(args.model, args.output, args.width)
    address = f"{args.host}:{args.port}"
    if args.server == "aio":
        asyncio.run(serve_aio(address, replies))
    else:
        serve_sync(address, replies, args.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
