"""KServe v2 REST tensors: JSON data and Triton's binary tensor data extension.

A request body is a JSON header, optionally followed by raw tensor bytes. With
binary data the ``Inference-Header-Content-Length`` header says where the JSON
ends; each input that has ``parameters.binary_data_size`` takes that many bytes
of the tail, in input order. Responses mirror it: outputs asked for in binary
(``parameters.binary_data`` per output, or ``binary_data_output`` for the whole
request) carry ``binary_data_size`` and their bytes follow the JSON header.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from infleet_worker.protocol.datatypes import DATATYPES, decode_raw, encode_raw
from infleet_worker.protocol.errors import ErrorKind, InferError, invalid
from infleet_worker.tensors import NUMPY_DTYPES, InferRequest, InferResult, Tensor

MAX_DIMS = 16


@dataclass(slots=True)
class OutputPlan:
    """How the client wants outputs back: ``binary`` per requested name."""

    default_binary: bool
    binary: dict[str, bool]


def decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Undo ``Content-Encoding: gzip|deflate`` without inflating past ``limit`` bytes."""
    enc = encoding.strip().lower()
    if enc in ("", "identity"):
        return body
    if enc == "gzip":
        wbits = 16 + zlib.MAX_WBITS
    elif enc == "deflate":  # zlib-wrapped, as tritonclient sends it (raw deflate accepted too)
        wbits = zlib.MAX_WBITS if body[:1] and (body[0] & 0x0F) == 8 else -zlib.MAX_WBITS
    else:
        raise invalid(f"unsupported Content-Encoding {encoding!r} (gzip, deflate)")
    try:
        d = zlib.decompressobj(wbits)
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise invalid(f"cannot inflate the {enc} request body: {e}") from None
    if len(out) > limit:
        raise InferError(ErrorKind.TOO_LARGE, f"inflated request body exceeds {limit} bytes")
    if not d.eof:
        raise invalid(f"truncated {enc} request body")
    return out


def _shape(raw: Any, where: str) -> tuple[int, ...]:
    if not isinstance(raw, list) or len(raw) > MAX_DIMS:
        raise invalid(f"{where}: 'shape' must be a list of at most {MAX_DIMS} integers")
    for d in raw:
        if type(d) is not int or d < 0:
            raise invalid(f"{where}: 'shape' must hold non-negative integers, got {raw}")
    return tuple(raw)


def _json_array(data: Any, datatype: str, shape: tuple[int, ...], name: str) -> np.ndarray:
    count = math.prod(shape)
    if datatype == "BF16":
        raise invalid(f"input '{name}': BF16 data must be sent as binary data")
    if not isinstance(data, list):
        data = [data]
    try:
        if datatype == "BYTES":
            flat = np.array(data, dtype=object).reshape(-1)
            out = np.empty(flat.size, dtype=object)
            for i, item in enumerate(flat):
                if isinstance(item, str):
                    out[i] = item.encode()
                elif isinstance(item, bytes | bool | int | float):
                    out[i] = item if isinstance(item, bytes) else str(item).encode()
                else:
                    raise invalid(f"input '{name}': BYTES data must be strings")
            arr = out
        else:
            arr = np.array(data, dtype=NUMPY_DTYPES[datatype])
            if arr.dtype == object:
                raise invalid(f"input '{name}': data is not {datatype}")
    except InferError:
        raise
    except (ValueError, TypeError, OverflowError) as e:
        raise invalid(f"input '{name}': data does not fit {datatype}: {e}") from None
    if arr.size != count:
        raise invalid(
            f"input '{name}': got {arr.size} elements of data, shape {list(shape)} needs {count}"
        )
    return arr.reshape(shape)


def decode_request(
    body: bytes,
    header_length: int | None,
    model_name: str,
    model_version: str,
) -> tuple[InferRequest, OutputPlan]:
    """Parse one infer request body; raises InferError(INVALID) with a clear message."""
    if header_length is None:
        header_bytes, tail = body, b""
    else:
        if header_length < 0 or header_length > len(body):
            raise invalid(
                f"Inference-Header-Content-Length {header_length} is outside the "
                f"{len(body)}-byte body"
            )
        header_bytes, tail = body[:header_length], body[header_length:]
    try:
        doc = json.loads(header_bytes)
    except (ValueError, UnicodeDecodeError) as e:
        raise invalid(f"request is not valid JSON: {e}") from None
    if not isinstance(doc, dict):
        raise invalid("request must be a JSON object")
    rid = doc.get("id", "")
    if not isinstance(rid, str):
        raise invalid("'id' must be a string")
    params = doc.get("parameters") or {}
    if not isinstance(params, dict):
        raise invalid("'parameters' must be an object")
    raw_inputs = doc.get("inputs")
    if not isinstance(raw_inputs, list) or not raw_inputs:
        raise invalid("request needs a non-empty 'inputs' list")

    tail_view = memoryview(tail)
    pos = 0
    inputs: dict[str, Tensor] = {}
    for i, item in enumerate(raw_inputs):
        if not isinstance(item, dict):
            raise invalid(f"inputs[{i}] must be an object")
        name = item.get("name")
        if not isinstance(name, str) or not name:
            raise invalid(f"inputs[{i}] needs a 'name'")
        if name in inputs:
            raise invalid(f"input '{name}' given twice")
        datatype = item.get("datatype")
        if datatype not in DATATYPES:
            raise invalid(f"input '{name}': unknown datatype {datatype!r}")
        shape = _shape(item.get("shape"), f"input '{name}'")
        iparams = item.get("parameters") or {}
        if not isinstance(iparams, dict):
            raise invalid(f"input '{name}': 'parameters' must be an object")
        if "shared_memory_region" in iparams:
            raise invalid(f"input '{name}': shared memory is not supported")
        size = iparams.get("binary_data_size")
        if size is not None:
            if type(size) is not int or size < 0:
                raise invalid(f"input '{name}': binary_data_size must be a non-negative int")
            if header_length is None:
                raise invalid(
                    f"input '{name}' has binary_data_size but the request has no "
                    "Inference-Header-Content-Length header"
                )
            if pos + size > len(tail):
                raise invalid(
                    f"input '{name}': binary data truncated: needs {size} bytes at offset "
                    f"{pos}, body has {len(tail) - pos} left"
                )
            arr = decode_raw(tail_view[pos : pos + size], datatype, shape, name)
            pos += size
        else:
            if "data" not in item:
                raise invalid(f"input '{name}' has neither 'data' nor binary_data_size")
            arr = _json_array(item["data"], datatype, shape, name)
        inputs[name] = Tensor(datatype, arr)
    if pos != len(tail):
        raise invalid(f"{len(tail) - pos} bytes of binary data are not claimed by any input")

    default_binary = params.get("binary_data_output", False)
    if not isinstance(default_binary, bool):
        raise invalid("'binary_data_output' must be a boolean")
    plan = OutputPlan(default_binary, {})
    requested: list[str] | None = None
    raw_outputs = doc.get("outputs")
    if raw_outputs is not None:
        if not isinstance(raw_outputs, list):
            raise invalid("'outputs' must be a list")
        requested = []
        for i, out in enumerate(raw_outputs):
            if not isinstance(out, dict) or not isinstance(out.get("name"), str):
                raise invalid(f"outputs[{i}] needs a 'name'")
            oname = out["name"]
            oparams = out.get("parameters") or {}
            if not isinstance(oparams, dict):
                raise invalid(f"output '{oname}': 'parameters' must be an object")
            if "shared_memory_region" in oparams:
                raise invalid(f"output '{oname}': shared memory is not supported")
            binary = oparams.get("binary_data", default_binary)
            if not isinstance(binary, bool):
                raise invalid(f"output '{oname}': binary_data must be a boolean")
            plan.binary[oname] = binary
            requested.append(oname)
        if not requested:
            requested = None

    priority = params.get("priority", 0)
    if type(priority) is not int or priority < 0:
        raise invalid("'priority' must be a non-negative integer")
    timeout = params.get("timeout")
    if timeout is not None and (type(timeout) is not int or timeout < 0):
        raise invalid("'timeout' must be a non-negative integer (microseconds)")
    req = InferRequest(
        model_name=model_name,
        model_version=model_version,
        inputs=inputs,
        request_id=rid,
        requested_outputs=requested,
        priority=priority,
        timeout_us=timeout or None,
        parameters=params,
    )
    return req, plan


def _json_data(t: Tensor) -> list[Any]:
    flat = t.array.reshape(-1)
    if t.datatype == "BYTES":
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else str(x) for x in flat]
    if t.datatype == "BF16":
        return (flat.astype(np.uint32) << 16).view(np.float32).tolist()
    return flat.tolist()


def encode_response(
    result: InferResult, request: InferRequest, plan: OutputPlan
) -> tuple[bytes, int | None]:
    """JSON header (+ binary tail); returns (body, header_length or None)."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for name, t in result.outputs.items():
        entry: dict[str, Any] = {"name": name, "datatype": t.datatype, "shape": list(t.shape)}
        if plan.binary.get(name, plan.default_binary):
            raw = encode_raw(t.array, t.datatype)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = _json_data(t)
        outputs.append(entry)
    doc: dict[str, Any] = {
        "model_name": request.model_name,
        "model_version": request.model_version,
        "outputs": outputs,
    }
    if request.request_id:
        doc["id"] = request.request_id
    header = json.dumps(doc, separators=(",", ":")).encode()
    if not blobs:
        return header, None
    return b"".join([header, *blobs]), len(header)
