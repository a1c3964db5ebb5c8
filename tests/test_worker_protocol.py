"""The worker speaks Triton's protocol: real tritonclient (HTTP/gRPC, sync/aio) against it."""

from __future__ import annotations

import gzip
import json
import urllib.request

import grpc
import ml_dtypes
import numpy as np
import pytest
import torch
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
import tritonclient.http.aio as httpaio
from tritonclient.grpc import service_pb2, service_pb2_grpc

from worker_engines import IN_FEATURES, EchoEngine, MLPEngine
from worker_fixtures import ServerThread, worker_config

ALL_TYPES = [
    "BOOL", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
    "FP16", "FP32", "FP64", "BF16", "BYTES",
]  # fmt: skip


def expected(engine: MLPEngine, x: np.ndarray) -> torch.Tensor:
    with torch.inference_mode():
        return engine.module(torch.from_numpy(x))


def sample(datatype: str, shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    if datatype == "BOOL":
        return rng.integers(0, 2, shape).astype(bool)
    if datatype == "BYTES":
        flat = [bytes(rng.integers(0, 256, rng.integers(0, 9)).astype(np.uint8)) for _ in
                range(int(np.prod(shape)))]  # fmt: skip
        return np.array(flat, dtype=object).reshape(shape)
    if datatype == "BF16":
        return rng.standard_normal(shape).astype(ml_dtypes.bfloat16)
    dt = np.dtype(datatype.lower().replace("fp", "float"))
    if dt.kind == "f":
        return (rng.standard_normal(shape) * 100).astype(dt)
    info = np.iinfo(dt)
    lo, hi = max(info.min, -(2**62)), min(info.max, 2**62)
    vals = rng.integers(lo, hi, shape, dtype=np.int64 if dt.kind == "i" else np.uint64)
    vals = vals.astype(dt)
    vals.flat[0] = info.max  # extremes survive the trip
    vals.flat[-1] = info.min
    return vals


# -- MLP: outputs equal a direct torch forward ----------------------------------------
@pytest.mark.parametrize("binary", [True, False])
def test_http_sync_mlp_matches_torch(mlp_server: ServerThread, binary: bool) -> None:
    engine = mlp_server.engine
    assert isinstance(engine, MLPEngine)
    x = np.random.default_rng(1).standard_normal((5, IN_FEATURES)).astype(np.float32)
    with httpclient.InferenceServerClient(mlp_server.http_url) as c:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x, binary_data=binary)
        outs = [
            httpclient.InferRequestedOutput("output", binary_data=binary),
            httpclient.InferRequestedOutput("sum", binary_data=not binary),
        ]
        r = c.infer("mlp", [inp], outputs=outs, request_id="req-7")
        assert r.get_response()["id"] == "req-7"
        want = expected(engine, x)
        torch.testing.assert_close(torch.from_numpy(r.as_numpy("output").copy()), want)
        torch.testing.assert_close(
            torch.from_numpy(r.as_numpy("sum").copy()), want.sum(1, keepdim=True)
        )
        # No outputs named: all, in binary (tritonclient sets binary_data_output).
        r = c.infer("mlp", [inp], model_version="1")
        assert [o["name"] for o in r.get_response()["outputs"]] == ["output", "sum"]
        torch.testing.assert_close(torch.from_numpy(r.as_numpy("output").copy()), want)


@pytest.mark.parametrize("algo", ["gzip", "deflate"])
def test_http_compressed_request(mlp_server: ServerThread, algo: str) -> None:
    x = np.random.default_rng(2).standard_normal((2, IN_FEATURES)).astype(np.float32)
    with httpclient.InferenceServerClient(mlp_server.http_url) as c:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        r = c.infer("mlp", [inp], request_compression_algorithm=algo,
                    response_compression_algorithm=algo)  # fmt: skip
        torch.testing.assert_close(
            torch.from_numpy(r.as_numpy("output").copy()),
            expected(mlp_server.engine, x),  # type: ignore[arg-type]
        )


def test_grpc_sync_mlp_matches_torch(mlp_server: ServerThread) -> None:
    x = np.random.default_rng(3).standard_normal((4, IN_FEATURES)).astype(np.float32)
    with grpcclient.InferenceServerClient(mlp_server.grpc_url) as c:
        inp = grpcclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        r = c.infer(
            "mlp", [inp], outputs=[grpcclient.InferRequestedOutput("sum")], request_id="g-1"
        )
        assert r.get_response().id == "g-1"
        assert r.as_numpy("output") is None
        want = expected(mlp_server.engine, x)  # type: ignore[arg-type]
        torch.testing.assert_close(
            torch.from_numpy(r.as_numpy("sum").copy()), want.sum(1, keepdim=True)
        )
        r = c.infer("mlp", [inp])
        torch.testing.assert_close(torch.from_numpy(r.as_numpy("output").copy()), want)


def test_grpc_typed_contents(mlp_server: ServerThread) -> None:
    """Inputs in typed contents (not raw); outputs always in raw_output_contents."""
    x = np.random.default_rng(4).standard_normal((2, IN_FEATURES)).astype(np.float32)
    with grpc.insecure_channel(mlp_server.grpc_url) as ch:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
        req = service_pb2.ModelInferRequest(model_name="mlp", id="typed")
        t = req.inputs.add(name="input", datatype="FP32", shape=[2, IN_FEATURES])
        t.contents.fp32_contents.extend(x.reshape(-1).tolist())
        resp = stub.ModelInfer(req)
    assert resp.id == "typed"
    assert len(resp.raw_output_contents) == 2
    out = np.frombuffer(resp.raw_output_contents[0], np.float32).reshape(2, -1)
    torch.testing.assert_close(torch.from_numpy(out.copy()), expected(mlp_server.engine, x))  # type: ignore[arg-type]


async def test_aio_clients_mlp(mlp_server: ServerThread) -> None:
    engine = mlp_server.engine
    x = np.random.default_rng(5).standard_normal((3, IN_FEATURES)).astype(np.float32)
    want = expected(engine, x)  # type: ignore[arg-type]
    hc = httpaio.InferenceServerClient(mlp_server.http_url)
    gc = grpcaio.InferenceServerClient(mlp_server.grpc_url)
    try:
        assert await hc.is_server_ready() and await gc.is_server_ready()
        assert await hc.is_model_ready("mlp") and await gc.is_model_ready("mlp")
        for binary in (True, False):
            hi = httpaio.InferInput("input", list(x.shape), "FP32")
            hi.set_data_from_numpy(x, binary_data=binary)
            out = httpaio.InferRequestedOutput("output", binary_data=binary)
            r = await hc.infer("mlp", [hi], outputs=[out])
            torch.testing.assert_close(torch.from_numpy(r.as_numpy("output").copy()), want)
        gi = grpcaio.InferInput("input", list(x.shape), "FP32")
        gi.set_data_from_numpy(x)
        r = await gc.infer("mlp", [gi], request_id="aio")
        assert r.get_response().id == "aio"
        torch.testing.assert_close(torch.from_numpy(r.as_numpy("output").copy()), want)

        # Bidirectional stream: answers carry their request ids; errors in error_message.
        async def requests():  # type: ignore[no-untyped-def]
            for k in range(6):
                i = grpcaio.InferInput("input", list(x.shape), "FP32")
                i.set_data_from_numpy(x + k)
                yield {"model_name": "mlp", "inputs": [i], "request_id": f"s{k}"}
            bad = grpcaio.InferInput("input", [1, 3], "FP32")
            bad.set_data_from_numpy(np.zeros((1, 3), np.float32))
            yield {"model_name": "mlp", "inputs": [bad], "request_id": "bad"}

        seen: dict[str, np.ndarray] = {}
        errors = []
        async for result, error in gc.stream_infer(requests()):
            if error is not None:
                errors.append(str(error))
            else:
                seen[result.get_response().id] = result.as_numpy("output")
        assert len(errors) == 1 and "shape" in errors[0]
        assert sorted(seen) == [f"s{k}" for k in range(6)]
        for k in range(6):
            torch.testing.assert_close(
                torch.from_numpy(seen[f"s{k}"].copy()),
                expected(engine, x + k),  # type: ignore[arg-type]
            )
    finally:
        await hc.close()
        await gc.close()


def test_grpc_sync_stream_echoes_ids_and_errors(mlp_server: ServerThread) -> None:
    import queue

    results: queue.Queue[tuple[object, object]] = queue.Queue()
    x = np.ones((1, IN_FEATURES), np.float32)
    with grpcclient.InferenceServerClient(mlp_server.grpc_url) as c:
        c.start_stream(callback=lambda result, error: results.put((result, error)))
        i = grpcclient.InferInput("input", [1, IN_FEATURES], "FP32")
        i.set_data_from_numpy(x)
        c.async_stream_infer("mlp", [i], request_id="one")
        c.async_stream_infer("nope", [i], request_id="two")
        got = [results.get(timeout=10) for _ in range(2)]
        c.stop_stream()
    ok = [r for r, e in got if e is None]
    err = [e for r, e in got if e is not None]
    assert len(ok) == 1 and ok[0].get_response().id == "one"  # type: ignore[attr-defined]
    assert len(err) == 1 and "unknown model 'nope'" in str(err[0])


# -- every datatype ----------------------------------------------------------------------
@pytest.mark.parametrize("datatype", ALL_TYPES)
def test_every_datatype_http_and_grpc(datatype: str) -> None:
    engine = EchoEngine(datatype)
    rng = np.random.default_rng(abs(hash(datatype)) % 1000)
    x = sample(datatype, (3, 5), rng)
    from infleet_worker.tensors import Tensor
    from worker_engines import double

    bits = x.view(np.uint16) if datatype == "BF16" else x
    want_double = None if datatype == "BYTES" else double(Tensor(datatype, bits))  # type: ignore[arg-type]

    def check(out: np.ndarray, dbl: np.ndarray | None) -> None:
        if datatype == "BYTES":
            assert out.tolist() == [[bytes(v)[::-1] for v in row] for row in x.tolist()]
            return
        if datatype == "BF16":
            out, dbl = out.view(np.uint16), dbl.view(np.uint16)  # type: ignore[union-attr]
        np.testing.assert_array_equal(out, bits)
        np.testing.assert_array_equal(dbl, want_double)  # type: ignore[arg-type]

    names = ["OUTPUT"] if datatype == "BYTES" else ["OUTPUT", "DOUBLE"]
    with ServerThread(worker_config(name="echo"), engine) as s:
        with httpclient.InferenceServerClient(s.http_url) as c:
            modes = [True] if datatype == "BF16" else [True, False]
            for binary in modes:
                data = x
                if datatype == "BYTES" and not binary:  # JSON carries UTF-8 strings only
                    data = np.array([[f"s-{v.hex()}".encode() for v in row] for row in x.tolist()],
                                    dtype=object)  # fmt: skip
                i = httpclient.InferInput("INPUT", list(x.shape), datatype)
                i.set_data_from_numpy(data, binary_data=binary)
                outs = [httpclient.InferRequestedOutput(n, binary_data=binary) for n in names]
                r = c.infer("echo", [i], outputs=outs)
                if datatype == "BYTES" and not binary:  # JSON strings come back as str
                    got = r.as_numpy("OUTPUT")
                    assert got.tolist() == [[v[::-1].decode() for v in row] for row in data]
                    continue
                check(r.as_numpy("OUTPUT"), r.as_numpy(names[-1]) if len(names) > 1 else None)
        with grpcclient.InferenceServerClient(s.grpc_url) as g:
            i = grpcclient.InferInput("INPUT", list(x.shape), datatype)
            i.set_data_from_numpy(x)
            r = g.infer("echo", [i])
            check(r.as_numpy("OUTPUT"), r.as_numpy(names[-1]) if len(names) > 1 else None)


# -- metadata, config, statistics, health, metrics ---------------------------------------
def test_metadata_config_stats_index(mlp_server: ServerThread) -> None:
    with httpclient.InferenceServerClient(mlp_server.http_url) as c:
        assert c.is_server_live() and c.is_server_ready()
        assert c.is_model_ready("mlp") and c.is_model_ready("mlp", "1")
        assert not c.is_model_ready("other") and not c.is_model_ready("mlp", "2")
        meta = c.get_server_metadata()
        assert {"binary_tensor_data", "model_configuration", "statistics"} <= set(
            meta["extensions"]
        )
        md = c.get_model_metadata("mlp", "1")
        assert md["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 16]}]
        cfg = c.get_model_config("mlp")
        assert cfg["max_batch_size"] == 16
        assert cfg["input"][0] == {"name": "input", "data_type": "TYPE_FP32", "dims": [16]}
        db = cfg["dynamic_batching"]
        assert db["max_queue_delay_microseconds"] == 2000
        assert db["default_queue_policy"]["max_queue_size"] == 1024
        assert c.get_model_repository_index() == [{"name": "mlp", "version": "1", "state": "READY"}]
        x = np.zeros((2, IN_FEATURES), np.float32)
        i = httpclient.InferInput("input", [2, IN_FEATURES], "FP32")
        i.set_data_from_numpy(x)
        c.infer("mlp", [i])
        stats = c.get_inference_statistics("mlp")["model_stats"][0]
        assert stats["inference_count"] == 2 and stats["execution_count"] == 1
        for k in ("success", "fail", "queue", "compute_input", "compute_infer",
                  "compute_output", "cache_hit", "cache_miss"):  # fmt: skip
            assert set(stats["inference_stats"][k]) == {"count", "ns"}
        assert stats["inference_stats"]["success"]["count"] == 1
        assert stats["batch_stats"][0]["batch_size"] == 2
        assert c.get_inference_statistics()["model_stats"][0]["name"] == "mlp"
    with grpcclient.InferenceServerClient(mlp_server.grpc_url) as g:
        assert g.is_server_live() and g.is_server_ready() and g.is_model_ready("mlp")
        assert "statistics" in g.get_server_metadata().extensions
        assert g.get_model_metadata("mlp").inputs[0].shape == [-1, 16]
        cfg = g.get_model_config("mlp").config
        assert cfg.max_batch_size == 16 and cfg.input[0].data_type == 11  # TYPE_FP32
        assert cfg.dynamic_batching.default_queue_policy.max_queue_size == 1024
        st = g.get_inference_statistics("mlp").model_stats[0]
        assert st.inference_count == 2 and st.execution_count == 1
        assert [m.name for m in g.get_model_repository_index().models] == ["mlp"]
        with pytest.raises(Exception, match="unknown model"):
            g.get_model_metadata("other")
    body = urllib.request.urlopen(mlp_server.metrics_url, timeout=5).read().decode()
    for name in (
        "infleet_queue_depth", "infleet_inflight_requests", "infleet_requests_total",
        "infleet_request_arrivals_total", "infleet_queue_wait_seconds_bucket",
        "infleet_request_latency_seconds_bucket", "infleet_batch_size_bucket",
        "infleet_batches_total", "infleet_ready",
    ):  # fmt: skip
        assert name in body, name
    assert 'infleet_ready{model="mlp",version="1"} 1.0' in body
    assert 'infleet_requests_total{model="mlp",outcome="success",version="1"} 1.0' in body


def test_raw_http_json_nested_and_flat(mlp_server: ServerThread) -> None:
    """Plain JSON clients (curl style): nested or flat data, JSON answer."""
    x = np.arange(2 * IN_FEATURES, dtype=np.float32).reshape(2, IN_FEATURES) / 10
    url = f"http://{mlp_server.http_url}/v2/models/mlp/infer"
    for data in (x.tolist(), x.reshape(-1).tolist()):
        body = {"id": "j", "inputs": [{"name": "input", "shape": [2, 16], "datatype": "FP32",
                                        "data": data}]}  # fmt: skip
        req = urllib.request.Request(url, json.dumps(body).encode(), method="POST")
        doc = json.loads(urllib.request.urlopen(req, timeout=5).read())
        assert doc["id"] == "j" and doc["model_name"] == "mlp" and doc["model_version"] == "1"
        out = {o["name"]: o for o in doc["outputs"]}
        got = np.array(out["output"]["data"], np.float32).reshape(out["output"]["shape"])
        torch.testing.assert_close(torch.from_numpy(got), expected(mlp_server.engine, x))  # type: ignore[arg-type]
    # gzip body with a raw client
    body = json.dumps({"inputs": [{"name": "input", "shape": [2, 16], "datatype": "FP32",
                                   "data": x.tolist()}]}).encode()  # fmt: skip
    req = urllib.request.Request(url, gzip.compress(body), method="POST",
                                 headers={"Content-Encoding": "gzip"})  # fmt: skip
    assert urllib.request.urlopen(req, timeout=5).status == 200
