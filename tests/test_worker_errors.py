"""Bad requests get 4xx / INVALID_ARGUMENT with a message, and the worker keeps serving."""

from __future__ import annotations

import http.client
import json
import struct

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tritonclient.utils import InferenceServerException

from worker_engines import IN_FEATURES, FailingEngine
from worker_fixtures import ServerThread, worker_config

GOOD = {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", "data": [0.5] * 16}]}


def post(
    server: ServerThread, body: bytes, headers: dict[str, str] | None = None, path: str = ""
) -> tuple[int, dict[str, object] | None]:
    host, port = server.http_url.split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        conn.request("POST", path or "/v2/models/mlp/infer", body=body, headers=headers or {})
        resp = conn.getresponse()
        data = resp.read()
    finally:
        conn.close()
    try:
        doc = json.loads(data) if data else None
    except ValueError:
        # Only aiohttp's own HTTP parser (e.g. a broken gzip stream) answers in text.
        doc = {"error": data.decode(errors="replace"), "text": True}
    return resp.status, doc


def binary_body(doc: dict[str, object], tail: bytes) -> tuple[bytes, dict[str, str]]:
    header = json.dumps(doc).encode()
    return header + tail, {"Inference-Header-Content-Length": str(len(header))}


def inp(**kw: object) -> dict[str, object]:
    return {"inputs": [{"name": "input", "shape": [1, 16], "datatype": "FP32", **kw}]}


F32 = np.zeros(16, np.float32).tobytes()

BAD_CASES: list[tuple[str, bytes, dict[str, str], str, int]] = [
    ("invalid json", b"{not json", {}, "not valid JSON", 400),
    ("not an object", b"[1,2]", {}, "JSON object", 400),
    ("no inputs", b"{}", {}, "inputs", 400),
    ("wrong dtype", json.dumps(inp(datatype="INT32", data=[1] * 16)).encode(), {},
     "datatype INT32", 400),
    ("unknown dtype", json.dumps(inp(datatype="FP8", data=[1] * 16)).encode(), {},
     "unknown datatype", 400),
    ("wrong shape", json.dumps(inp(shape=[1, 15], data=[1] * 15)).encode(), {}, "shape", 400),
    ("data/shape mismatch", json.dumps(inp(data=[1] * 15)).encode(), {}, "elements", 400),
    ("missing input", json.dumps({"inputs": [{"name": "other", "shape": [1], "datatype": "FP32",
                                              "data": [1]}]}).encode(), {}, "unexpected input",
     400),
    ("unknown output", json.dumps({**GOOD, "outputs": [{"name": "nope"}]}).encode(), {},
     "unknown output 'nope'", 400),
    ("batch too big", json.dumps(inp(shape=[17, 16], data=[0] * 17 * 16)).encode(), {},
     "exceeds the model's max_batch_size 16", 400),
    ("truncated binary", *binary_body(inp(parameters={"binary_data_size": 64}), F32[:40]),
     "truncated", 400),
    ("binary size mismatch", *binary_body(inp(parameters={"binary_data_size": 40}), F32[:40]),
     "expected 64", 400),
    ("extra binary bytes", *binary_body(inp(parameters={"binary_data_size": 64}), F32 + b"x"),
     "not claimed", 400),
    ("header length past end", b"{}", {"Inference-Header-Content-Length": "99"}, "outside",
     400),
    ("header length not int", b"{}", {"Inference-Header-Content-Length": "x"}, "integer", 400),
    ("BF16 as JSON", json.dumps(inp(datatype="BF16", data=[1] * 16)).encode(), {},
     "binary", 400),
    ("int overflow", json.dumps({"inputs": [{"name": "input", "shape": [1, 16],
                                             "datatype": "FP32", "data": ["x"] * 16}]}).encode(),
     {}, "FP32", 400),
    ("bad gzip", b"\x1f\x8b garbage", {"Content-Encoding": "gzip"}, "", 400),
]  # fmt: skip


@pytest.mark.parametrize("case", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_http_bad_requests_are_4xx_with_message(
    mlp_server: ServerThread, case: tuple[str, bytes, dict[str, str], str, int]
) -> None:
    _, body, headers, needle, status = case
    got, doc = post(mlp_server, body, headers)
    assert got == status
    if needle:
        assert doc is not None and needle in str(doc["error"]), doc
    # ...and the worker still serves a good request.
    got, doc = post(mlp_server, json.dumps(GOOD).encode())
    assert got == 200 and doc is not None and doc["outputs"]


def test_unknown_model_and_version(mlp_server: ServerThread) -> None:
    got, doc = post(mlp_server, json.dumps(GOOD).encode(), path="/v2/models/other/infer")
    assert got == 400 and "unknown model 'other'" in str(doc)
    got, doc = post(mlp_server, json.dumps(GOOD).encode(), path="/v2/models/mlp/versions/9/infer")
    assert got == 400 and "unknown version '9'" in str(doc)
    with httpclient.InferenceServerClient(mlp_server.http_url) as c:
        with pytest.raises(InferenceServerException, match="unknown model"):
            c.get_model_metadata("other")
        with pytest.raises(InferenceServerException, match="unknown model"):
            c.get_model_config("other")


def test_oversized_body_is_413() -> None:
    cfg = worker_config(server={"maxRequestBytes": 4096})
    with ServerThread(cfg, FailingEngine()) as s:
        big = json.dumps(inp(data=[0.0] * 16)).encode() + b" " * 5000
        got, doc = post(s, big)
        assert got == 413 and "exceeds" in str(doc)
        x = np.zeros((1, 2000), np.float32)  # gRPC: over the receive limit
        with grpcclient.InferenceServerClient(s.grpc_url) as g:
            i = grpcclient.InferInput("input", [1, 2000], "FP32")
            i.set_data_from_numpy(x)
            with pytest.raises(InferenceServerException) as err:
                g.infer("mlp", [i])
            assert err.value.status() == "StatusCode.RESOURCE_EXHAUSTED"
        assert post(s, json.dumps(GOOD).encode())[0] == 200


def test_grpc_bad_requests_invalid_argument(mlp_server: ServerThread) -> None:
    x = np.zeros((1, IN_FEATURES), np.float32)
    with grpcclient.InferenceServerClient(mlp_server.grpc_url) as g:

        def infer(name: str, arr: np.ndarray, dtype: str = "FP32", model: str = "mlp",
                  **kw: object) -> None:  # fmt: skip
            i = grpcclient.InferInput(name, list(arr.shape), dtype)
            i.set_data_from_numpy(arr)
            g.infer(model, [i], **kw)  # type: ignore[arg-type]

        cases = [
            (lambda: infer("input", np.zeros((1, 3), np.float32)), "INVALID_ARGUMENT", "shape"),
            (lambda: infer("input", np.zeros((1, 16), np.int32), "INT32"), "INVALID_ARGUMENT",
             "datatype"),
            (lambda: infer("other", x), "INVALID_ARGUMENT", "unexpected input"),
            (lambda: infer("input", np.zeros((17, 16), np.float32)), "INVALID_ARGUMENT",
             "max_batch_size"),
            (lambda: infer("input", x, outputs=[grpcclient.InferRequestedOutput("zz")]),
             "INVALID_ARGUMENT", "unknown output"),
            (lambda: infer("input", x, model="other"), "NOT_FOUND", "unknown model"),
            (lambda: infer("input", x, model_version="3"), "NOT_FOUND", "unknown version"),
        ]  # fmt: skip
        for call, code, needle in cases:
            with pytest.raises(InferenceServerException) as err:
                call()
            assert err.value.status() == f"StatusCode.{code}", err.value
            assert needle in err.value.message()
        # Raw contents that do not match the shape.
        from tritonclient.grpc import service_pb2, service_pb2_grpc

        req = service_pb2.ModelInferRequest(model_name="mlp")
        req.inputs.add(name="input", datatype="FP32", shape=[1, 16])
        req.raw_input_contents.append(b"\0" * 10)
        import grpc

        with grpc.insecure_channel(mlp_server.grpc_url) as ch:
            stub = service_pb2_grpc.GRPCInferenceServiceStub(ch)
            with pytest.raises(grpc.RpcError) as rerr:
                stub.ModelInfer(req)
            assert rerr.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "expected 64" in (rerr.value.details() or "")
        infer("input", x)  # still serving


def test_engine_failure_fails_only_that_batch() -> None:
    with ServerThread(worker_config(), FailingEngine()) as s:
        bad = np.full((1, IN_FEATURES), -999, np.float32)
        got, doc = post(s, json.dumps(inp(data=bad.reshape(-1).tolist())).encode())
        assert got == 500 and "poisoned row" in str(doc)
        assert post(s, json.dumps(GOOD).encode())[0] == 200
        with grpcclient.InferenceServerClient(s.grpc_url) as g:
            i = grpcclient.InferInput("input", [1, IN_FEATURES], "FP32")
            i.set_data_from_numpy(bad)
            with pytest.raises(InferenceServerException) as err:
                g.infer("mlp", [i])
            assert err.value.status() == "StatusCode.INTERNAL"


# -- fuzz: never a 5xx, a crash or a hang ----------------------------------------------------
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner,
                                                                  max_size=4),
    max_leaves=20,
)  # fmt: skip
datatypes = st.sampled_from(["FP32", "INT32", "BYTES", "BF16", "BOOL", "FP16", "UINT64", "X"])
tensor = st.fixed_dictionaries(
    {"name": st.sampled_from(["input", "other", ""]), "datatype": datatypes,
     "shape": st.lists(st.integers(-2, 20), max_size=3)},
    optional={"data": json_values, "parameters": st.fixed_dictionaries(
        {}, optional={"binary_data_size": st.integers(-5, 200) | json_values})},
)  # fmt: skip
request_docs = st.fixed_dictionaries(
    {},
    optional={
        "id": json_values,
        "inputs": st.lists(tensor, max_size=3) | json_values,
        "outputs": st.lists(st.fixed_dictionaries({"name": st.sampled_from(["output", "x"])},
                                                  optional={"parameters": json_values}),
                            max_size=2) | json_values,
        "parameters": st.dictionaries(st.sampled_from(["priority", "timeout",
                                                       "binary_data_output", "x"]),
                                      json_values, max_size=3),
    },
)  # fmt: skip


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    doc=request_docs,
    tail=st.binary(max_size=96),
    header_len=st.none()
    | st.integers(-3, 400)
    | st.just("len")
    | st.text(
        # what an HTTP/1.1 header value can carry at all (latin-1, no control characters)
        alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF, exclude_characters="\x7f"),
        max_size=4,
    ),
    encoding=st.none() | st.sampled_from(["gzip", "deflate", "br", "identity"]),
    raw=st.none() | st.binary(max_size=64),
)
def test_fuzz_http_body_parser(
    mlp_server: ServerThread,
    doc: dict[str, object],
    tail: bytes,
    header_len: object,
    encoding: str | None,
    raw: bytes | None,
) -> None:
    try:
        header = json.dumps(doc).encode()
    except ValueError:
        header = b"{}"
    body = raw if raw is not None else header + tail
    headers: dict[str, str] = {}
    if header_len == "len":
        headers["Inference-Header-Content-Length"] = str(len(header))
    elif isinstance(header_len, int):
        headers["Inference-Header-Content-Length"] = str(header_len)
    elif isinstance(header_len, str) and header_len.isprintable() and header_len.strip():
        headers["Inference-Header-Content-Length"] = header_len.strip()
    if encoding:
        headers["Content-Encoding"] = encoding
    status, answer = post(mlp_server, body, headers)
    assert status == 200 or 400 <= status < 500, (status, answer)
    if status != 200:
        assert answer is not None and isinstance(answer.get("error"), str) and answer["error"]


def test_server_survives_fuzz_and_still_answers(mlp_server: ServerThread) -> None:
    # a few deliberately nasty raw bodies in a row, then a good one
    for body in (b"\0" * 100, struct.pack("<I", 2**31) * 4, b'{"inputs": [' * 500, b""):
        status, _ = post(mlp_server, body, {"Inference-Header-Content-Length": "0"})
        assert 400 <= status < 500
    assert post(mlp_server, json.dumps(GOOD).encode())[0] == 200
