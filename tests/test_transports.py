"""The transports at their edges: compression, limits, unknown methods and routes,
broken messages, cancelled streams, many connections, a graceful stop; each case on
the compiled transport and on the Python one (aiohttp, grpcio), with real
grpcio/tritonclient clients and plain HTTP."""

from __future__ import annotations

import concurrent.futures
import http.client
import json
import threading
import time

import grpc
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.grpc import service_pb2, service_pb2_grpc
from tritonclient.utils import InferenceServerException

from worker_engines import IN_FEATURES, MLPEngine
from worker_fixtures import TRANSPORTS, ServerThread, require_native, worker_config

SERVICE = "/inference.GRPCInferenceService/"


@pytest.fixture(params=TRANSPORTS)
def server(request: pytest.FixtureRequest) -> ServerThread:
    if request.param == "native":
        require_native()
    cfg = worker_config(server={"transport": request.param, "maxRequestBytes": 64 * 1024})
    with ServerThread(cfg, MLPEngine()) as s:
        yield s  # type: ignore[misc]


def _want(server: ServerThread, x: np.ndarray) -> torch.Tensor:
    assert isinstance(server.engine, MLPEngine)
    with torch.inference_mode():
        return server.engine.module(torch.from_numpy(x))


def _input(x: np.ndarray) -> grpcclient.InferInput:
    i = grpcclient.InferInput("input", list(x.shape), "FP32")
    i.set_data_from_numpy(x)
    return i


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_compressed_requests(server: ServerThread, algorithm: str) -> None:
    x = np.random.default_rng(1).standard_normal((3, IN_FEATURES)).astype(np.float32)
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        r = c.infer("mlp", [_input(x)], compression_algorithm=algorithm)
    torch.testing.assert_close(torch.from_numpy(r.as_numpy("output").copy()), _want(server, x))


def test_a_message_over_the_limit_is_refused_alone(server: ServerThread) -> None:
    big = np.zeros((1, 20_000), np.float32)  # 80 kB > the 64 KiB limit
    x = np.ones((1, IN_FEATURES), np.float32)
    with grpcclient.InferenceServerClient(server.grpc_url) as c:
        with pytest.raises(InferenceServerException) as e:
            c.infer("mlp", [_input(big)])
        assert e.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        r = c.infer("mlp", [_input(x)])  # the connection still serves
    torch.testing.assert_close(torch.from_numpy(r.as_numpy("output").copy()), _want(server, x))


def test_unknown_method_and_broken_message(server: ServerThread) -> None:
    with grpc.insecure_channel(server.grpc_url) as ch:
        nope = ch.unary_unary(SERVICE + "Nope")
        with pytest.raises(grpc.RpcError) as e:
            nope(b"", timeout=10)
        assert e.value.code() == grpc.StatusCode.UNIMPLEMENTED
        infer = ch.unary_unary(SERVICE + "ModelInfer")
        with pytest.raises(grpc.RpcError) as e:
            infer(b"\xff\xff\xff", timeout=10)  # not a protobuf message
        # grpcio's own layer answers UNKNOWN; gRPC's status guide says INTERNAL.
        native = server.cfg.server.transport == "native"
        assert e.value.code() == (grpc.StatusCode.INTERNAL if native else grpc.StatusCode.UNKNOWN)
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        assert stub.ServerLive(service_pb2.ServerLiveRequest(), timeout=10).live


def test_many_connections_many_requests_all_answered_right(server: ServerThread) -> None:
    """8 connections x 40 requests of 1-4 rows, at once: every answer is its own."""
    rng = np.random.default_rng(7)
    xs = [
        rng.standard_normal((int(rng.integers(1, 5)), IN_FEATURES)).astype(np.float32)
        for _ in range(320)
    ]

    def client(part: list[np.ndarray]) -> list[np.ndarray]:
        with grpcclient.InferenceServerClient(server.grpc_url) as c:
            return [c.infer("mlp", [_input(x)]).as_numpy("output") for x in part]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        parts = [xs[k::8] for k in range(8)]
        results = list(pool.map(client, parts))
    for part, outs in zip(parts, results, strict=True):
        for x, out in zip(part, outs, strict=True):
            torch.testing.assert_close(torch.from_numpy(out.copy()), _want(server, x))


def test_a_cancelled_stream_leaves_the_server_serving(server: ServerThread) -> None:
    with grpc.insecure_channel(server.grpc_url) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        gate = threading.Event()

        def requests():  # type: ignore[no-untyped-def]
            req = service_pb2.ModelInferRequest(model_name="mlp", id="s")
            t = req.inputs.add(name="input", datatype="FP32", shape=[1, IN_FEATURES])
            t.contents.fp32_contents.extend([1.0] * IN_FEATURES)
            yield req
            gate.wait(10)  # hold the stream open until cancelled

        call = stub.ModelStreamInfer(requests())
        first = next(call)
        assert first.infer_response.id == "s" and not first.error_message
        call.cancel()
        gate.set()
        with pytest.raises(grpc.RpcError) as e:
            next(call)
        assert e.value.code() == grpc.StatusCode.CANCELLED
        assert stub.ServerReady(service_pb2.ServerReadyRequest(), timeout=10).ready


def test_stop_lets_calls_in_flight_finish() -> None:
    """A slow batch in flight when the server stops still gets its answer."""
    require_native()
    cfg = worker_config(
        server={"transport": "native"},
        batching={"maxQueueDelayMicroseconds": 300_000, "maxBatchSize": 64},
    )
    s = ServerThread(cfg, MLPEngine()).start()
    x = np.ones((2, IN_FEATURES), np.float32)
    with (
        grpcclient.InferenceServerClient(s.grpc_url) as c,
        concurrent.futures.ThreadPoolExecutor(1) as pool,
    ):
        pending = pool.submit(c.infer, "mlp", [_input(x)])
        time.sleep(0.1)  # queued, waiting out the 300 ms delay
        s.stop()
        out = pending.result(timeout=20).as_numpy("output")
    torch.testing.assert_close(torch.from_numpy(out.copy()), _want(s, x))


# -- HTTP ---------------------------------------------------------------------------
def _post(server: ServerThread, path: str, body: bytes, **headers: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    c = http.client.HTTPConnection(server.http_url, timeout=10)
    try:
        c.request("POST", path, body=body, headers=headers)
        r = c.getresponse()
        return r.status, json.loads(r.read() or b"{}")
    finally:
        c.close()


@pytest.mark.parametrize("algorithm", ["gzip", "deflate"])
def test_http_compressed_requests(server: ServerThread, algorithm: str) -> None:
    x = np.random.default_rng(2).standard_normal((3, IN_FEATURES)).astype(np.float32)
    with httpclient.InferenceServerClient(server.http_url) as c:
        i = httpclient.InferInput("input", list(x.shape), "FP32")
        i.set_data_from_numpy(x)
        r = c.infer("mlp", [i], request_compression_algorithm=algorithm)
    torch.testing.assert_close(torch.from_numpy(r.as_numpy("output").copy()), _want(server, x))


def test_http_body_over_the_limit_is_413_and_the_connection_serves_on(server: ServerThread) -> None:
    status, doc = _post(server, "/v2/models/mlp/infer", b"x" * 70_000)
    assert status == 413 and "exceeds the limit of 65536 bytes" in doc["error"]
    body = json.dumps(
        {"inputs": [{"name": "input", "shape": [1, IN_FEATURES], "datatype": "FP32",
                     "data": [0.5] * IN_FEATURES}]}
    ).encode()  # fmt: skip
    status, doc = _post(server, "/v2/models/mlp/versions/1/infer", body)
    assert status == 200 and doc["outputs"][0]["name"] == "output"


def test_http_errors_are_the_same_on_both_transports() -> None:
    """Status and body of each bad request, native vs aiohttp: equal, v2's error shape."""
    require_native()
    good = {"name": "input", "shape": [1, IN_FEATURES], "datatype": "FP32",
            "data": [0.5] * IN_FEATURES}  # fmt: skip
    cases: list[tuple[str, bytes, dict[str, str]]] = [
        ("/v2/models/mlp/infer", b"{not json", {}),
        ("/v2/models/nope/infer", b"{}", {}),
        ("/v2/models/mlp/versions/7/infer", b"{}", {}),
        ("/v2/models/a/b/infer", b"{}", {}),
        ("/v2/nowhere", b"", {}),
        ("/v2/models/mlp/infer", json.dumps({"inputs": [{**good, "shape": [1, 3]}]}).encode(), {}),
        ("/v2/models/mlp/infer", json.dumps({"inputs": [good]}).encode(),
         {"Inference-Header-Content-Length": "x"}),
        ("/v2/models/mlp/infer", b"\x00garbage", {"Content-Encoding": "gzip"}),
        ("/v2/models/mlp/infer", b"x" * 70_000, {}),
    ]  # fmt: skip
    answers = {}
    for transport in TRANSPORTS:
        cfg = worker_config(server={"transport": transport, "maxRequestBytes": 64 * 1024})
        with ServerThread(cfg, MLPEngine()) as s:
            answers[transport] = [_post(s, path, body, **h) for path, body, h in cases]
    for case, native, python in zip(cases, answers["native"], answers["python"], strict=True):
        assert native == python, case[0]
        assert native[0] >= 400 and isinstance(native[1]["error"], str), (case[0], native)


def test_http_other_routes_answer_as_before(server: ServerThread) -> None:
    """Health, metadata, config and the OpenAI model list (the native transport passes
    them through to the aiohttp app)."""
    with httpclient.InferenceServerClient(server.http_url) as c:
        assert c.is_server_live() and c.is_server_ready() and c.is_model_ready("mlp")
        assert c.get_model_metadata("mlp")["name"] == "mlp"
        assert c.get_model_config("mlp")["max_batch_size"] == 16
    conn = http.client.HTTPConnection(server.http_url, timeout=10)
    conn.request("GET", "/v1/models")
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["data"][0]["id"] == "mlp"
    conn.close()


def test_http_many_connections_many_requests_all_answered_right(server: ServerThread) -> None:
    rng = np.random.default_rng(8)
    xs = [
        rng.standard_normal((int(rng.integers(1, 5)), IN_FEATURES)).astype(np.float32)
        for _ in range(240)
    ]

    def client(part: list[np.ndarray]) -> list[np.ndarray]:
        with httpclient.InferenceServerClient(server.http_url) as c:
            outs = []
            for x in part:
                i = httpclient.InferInput("input", list(x.shape), "FP32")
                i.set_data_from_numpy(x, binary_data=bool(len(outs) % 2))
                outs.append(c.infer("mlp", [i]).as_numpy("output"))
            return outs

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        parts = [xs[k::6] for k in range(6)]
        results = list(pool.map(client, parts))
    for part, outs in zip(parts, results, strict=True):
        for x, out in zip(part, outs, strict=True):
            torch.testing.assert_close(torch.from_numpy(out.copy()), _want(server, x))
