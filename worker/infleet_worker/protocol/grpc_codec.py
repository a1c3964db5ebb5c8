"""gRPC ``inference.GRPCInferenceService`` tensors: raw or typed contents in, raw out."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from tritonclient.grpc import service_pb2 as pb

from infleet_worker.protocol.datatypes import DATATYPES, decode_raw, encode_raw
from infleet_worker.protocol.errors import invalid
from infleet_worker.tensors import NUMPY_DTYPES, InferRequest, InferResult, Tensor

MAX_DIMS = 16

# Typed-contents field per datatype (FP16 and BF16 exist only as raw bytes).
CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}


def param_value(p: pb.InferParameter) -> Any:
    kind = p.WhichOneof("parameter_choice")
    return getattr(p, kind) if kind else None


def decode_request(msg: pb.ModelInferRequest, default_version: str) -> InferRequest:
    raw = msg.raw_input_contents
    if raw and len(raw) != len(msg.inputs):
        raise invalid(
            f"raw_input_contents has {len(raw)} entries for {len(msg.inputs)} inputs; "
            "send raw contents for all inputs or for none"
        )
    inputs: dict[str, Tensor] = {}
    for i, t in enumerate(msg.inputs):
        name = t.name
        if not name:
            raise invalid(f"inputs[{i}] needs a name")
        if name in inputs:
            raise invalid(f"input '{name}' given twice")
        datatype = t.datatype
        if datatype not in DATATYPES:
            raise invalid(f"input '{name}': unknown datatype {datatype!r}")
        shape = tuple(t.shape)  # one read of the repeated field (each read wraps it anew)
        if len(shape) > MAX_DIMS or (shape and min(shape) < 0):
            raise invalid(f"input '{name}': bad shape {list(shape)}")
        if "shared_memory_region" in t.parameters:
            raise invalid(f"input '{name}': shared memory is not supported")
        if raw:
            arr = decode_raw(raw[i], datatype, shape, name)
        else:
            field = CONTENTS_FIELD.get(datatype)
            if field is None:
                raise invalid(f"input '{name}': {datatype} data must be sent in raw_input_contents")
            values = getattr(t.contents, field)
            count = math.prod(shape)
            if len(values) != count:
                raise invalid(
                    f"input '{name}': got {len(values)} elements in contents, shape "
                    f"{list(shape)} needs {count}"
                )
            try:
                if datatype == "BYTES":
                    arr = np.empty(count, dtype=object)
                    for j, v in enumerate(values):
                        arr[j] = bytes(v)
                    arr = arr.reshape(shape)
                else:
                    arr = np.array(values, dtype=NUMPY_DTYPES[datatype]).reshape(shape)
            except (ValueError, OverflowError) as e:
                raise invalid(f"input '{name}': contents do not fit {datatype}: {e}") from None
        inputs[name] = Tensor(datatype, arr)
    if not inputs:
        raise invalid("request has no inputs")
    given = msg.parameters
    params = {k: param_value(v) for k, v in given.items()} if given else {}
    priority = params.get("priority", 0) or 0
    timeout = params.get("timeout")
    if type(priority) is not int or priority < 0:
        raise invalid("'priority' must be a non-negative integer")
    if timeout is not None and (type(timeout) is not int or timeout < 0):
        raise invalid("'timeout' must be a non-negative integer (microseconds)")
    outputs = msg.outputs
    requested = [o.name for o in outputs] or None
    for o in outputs:
        if "shared_memory_region" in o.parameters:
            raise invalid(f"output '{o.name}': shared memory is not supported")
    return InferRequest(
        model_name=msg.model_name,
        model_version=msg.model_version or default_version,
        inputs=inputs,
        request_id=msg.id,
        requested_outputs=requested,
        priority=priority,
        timeout_us=timeout or None,
        parameters=params,
    )


def encode_response(result: InferResult, request: InferRequest) -> pb.ModelInferResponse:
    """Every output, numeric or BYTES, goes in raw_output_contents."""
    resp = pb.ModelInferResponse(
        model_name=request.model_name, model_version=request.model_version, id=request.request_id
    )
    outs = resp.outputs
    raws = resp.raw_output_contents
    for name, t in result.outputs.items():
        o = outs.add()
        o.name = name
        o.datatype = t.datatype
        o.shape.extend(t.shape)
        raws.append(encode_raw(t.array, t.datatype))
    return resp
