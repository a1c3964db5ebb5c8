"""Cache keys: a strong hash over a canonical, unambiguous encoding of a request.

Every variable-length field is length-prefixed and every number has a fixed
width and byte order, so no two different requests encode to the same byte
stream (and so, short of a BLAKE2b collision, never share a key). Inputs are
hashed in name order, so the order of a request's ``inputs`` dict does not
matter; requested outputs are sorted, and ``None`` (all outputs) is distinct
from every explicit list.

Key layout (the readable part lets an operator ``SCAN``/``UNLINK`` one model or
version; the digest covers everything, the readable part included)::

    {namespace}:{kind}:{model}:{version}:{blake2b-256 hex}

``kind`` is ``o`` for a whole-request output entry and ``e`` for one embedding row.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from infleet_worker.tensors import NUMPY_DTYPES, InferRequest, Tensor

KEY_FORMAT = b"infleet-cache-key/v1"
DIGEST_SIZE = 32

_U64 = struct.Struct("<Q")


class UnhashableRequest(ValueError):
    """The request cannot be keyed (unknown datatype, BYTES element of another type, ...)."""


def _put(h: Any, data: bytes | memoryview) -> None:
    h.update(_U64.pack(len(data)))
    h.update(data)


def _put_str(h: Any, text: str) -> None:
    _put(h, text.encode("utf-8"))


def _element_bytes(item: object) -> bytes:
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    if isinstance(item, str):
        return item.encode("utf-8")
    raise UnhashableRequest(f"BYTES element of type {type(item).__name__}")


def _le_dtype(datatype: str) -> np.dtype[Any]:
    try:
        dtype = NUMPY_DTYPES[datatype]
    except KeyError:
        raise UnhashableRequest(f"unknown datatype {datatype!r}") from None
    if datatype == "BOOL":
        return np.dtype(np.uint8)
    return dtype.newbyteorder("<")


def canonical_array(datatype: str, array: np.ndarray) -> np.ndarray:
    """C-contiguous little-endian view/copy of a fixed-size array (BOOL as uint8)."""
    dtype = _le_dtype(datatype)
    if datatype == "BOOL":
        array = array.astype(np.bool_, copy=False).view(np.uint8)
    return np.ascontiguousarray(array, dtype=dtype)


def _put_payload(h: Any, datatype: str, array: np.ndarray) -> None:
    if datatype == "BYTES":
        flat = array.reshape(-1)
        h.update(_U64.pack(flat.size))
        for item in flat:
            _put(h, _element_bytes(item))
        return
    data = canonical_array(datatype, array)
    h.update(_U64.pack(data.nbytes))
    h.update(data.reshape(-1).view(np.uint8).data)


def _put_header(
    h: Any, kind: bytes, model: str, version: str, requested: Sequence[str] | None
) -> None:
    h.update(KEY_FORMAT)
    _put(h, kind)
    _put_str(h, model)
    _put_str(h, version)
    if requested is None:
        h.update(b"\x00")
    else:
        names = sorted(set(requested))
        h.update(b"\x01" + _U64.pack(len(names)))
        for name in names:
            _put_str(h, name)


def _put_tensor_meta(h: Any, name: str, datatype: str, shape: Iterable[int]) -> None:
    dims = tuple(int(d) for d in shape)
    _put_str(h, name)
    _put_str(h, datatype)
    h.update(_U64.pack(len(dims)))
    for d in dims:
        h.update(_U64.pack(d))


def _sorted_inputs(inputs: dict[str, Tensor]) -> list[tuple[str, Tensor]]:
    return sorted(inputs.items(), key=lambda kv: kv[0])


def _format(namespace: str, kind: str, model: str, version: str, digest: str) -> str:
    return f"{namespace}:{kind}:{model}:{version}:{digest}"


def output_key(namespace: str, request: InferRequest) -> str:
    """Key of a whole request (output mode)."""
    h = hashlib.blake2b(digest_size=DIGEST_SIZE)
    _put_header(h, b"o", request.model_name, request.model_version, request.requested_outputs)
    items = _sorted_inputs(request.inputs)
    h.update(_U64.pack(len(items)))
    for name, tensor in items:
        _put_tensor_meta(h, name, tensor.datatype, tensor.array.shape)
        _put_payload(h, tensor.datatype, tensor.array)
    return _format(namespace, "o", request.model_name, request.model_version, h.hexdigest())


def row_count(request: InferRequest) -> int | None:
    """Rows shared by every input (the batch dimension), or None if they disagree."""
    sizes = {t.array.shape[0] if t.array.ndim else -1 for t in request.inputs.values()}
    if len(sizes) != 1:
        return None
    (n,) = sizes
    return n if n >= 0 else None


def row_keys(namespace: str, request: InferRequest) -> list[str]:
    """One key per row (embedding mode): that row's bytes of every input + model/outputs.

    Raises UnhashableRequest when the inputs do not share a batch dimension.
    """
    n = row_count(request)
    if n is None:
        raise UnhashableRequest("inputs do not share a batch dimension")
    base = hashlib.blake2b(digest_size=DIGEST_SIZE)
    _put_header(base, b"e", request.model_name, request.model_version, request.requested_outputs)
    items = _sorted_inputs(request.inputs)
    base.update(_U64.pack(len(items)))
    prepared: list[tuple[str, str, tuple[int, ...], np.ndarray]] = []
    for name, tensor in items:
        array = tensor.array
        if tensor.datatype != "BYTES":
            array = canonical_array(tensor.datatype, array)
        prepared.append((name, tensor.datatype, tuple(array.shape[1:]), array))
    keys: list[str] = []
    for i in range(n):
        h = base.copy()
        for name, datatype, row_shape, array in prepared:
            _put_tensor_meta(h, name, datatype, row_shape)
            row = array[i : i + 1]  # a slice keeps 0-d rows an array
            if datatype == "BYTES":
                _put_payload(h, datatype, row)
            else:
                h.update(_U64.pack(row.nbytes))
                h.update(row.reshape(-1).view(np.uint8).data)
        keys.append(
            _format(namespace, "e", request.model_name, request.model_version, h.hexdigest())
        )
    return keys
