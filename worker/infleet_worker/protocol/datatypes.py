"""Triton datatypes: numpy dtypes, model-config enum names and the BYTES wire format."""

from __future__ import annotations

import math
import struct
from typing import Any

import numpy as np

from infleet_worker.protocol.errors import invalid
from infleet_worker.tensors import NUMPY_DTYPES

DATATYPES = frozenset(NUMPY_DTYPES)

# Wire (little-endian) dtype per datatype, for decoding raw buffers.
WIRE_DTYPES: dict[str, np.dtype[Any]] = {
    k: v.newbyteorder("<") for k, v in NUMPY_DTYPES.items() if k != "BYTES"
}

# Model-config enum names (model_config.proto DataType).
CONFIG_TYPES: dict[str, str] = {
    "BOOL": "TYPE_BOOL",
    "UINT8": "TYPE_UINT8",
    "UINT16": "TYPE_UINT16",
    "UINT32": "TYPE_UINT32",
    "UINT64": "TYPE_UINT64",
    "INT8": "TYPE_INT8",
    "INT16": "TYPE_INT16",
    "INT32": "TYPE_INT32",
    "INT64": "TYPE_INT64",
    "FP16": "TYPE_FP16",
    "FP32": "TYPE_FP32",
    "FP64": "TYPE_FP64",
    "BF16": "TYPE_BF16",
    "BYTES": "TYPE_STRING",
}


def element_size(datatype: str) -> int:
    return WIRE_DTYPES[datatype].itemsize


def decode_bytes(buf: bytes | memoryview, count: int, name: str) -> np.ndarray:
    """BYTES wire format: per element a 4-byte little-endian length then the bytes."""
    mv = memoryview(buf)
    out = np.empty(count, dtype=object)
    pos, end = 0, len(mv)
    for i in range(count):
        if pos + 4 > end:
            raise invalid(f"input '{name}': BYTES data ends after {i} of {count} elements")
        (length,) = struct.unpack_from("<I", mv, pos)
        pos += 4
        if pos + length > end:
            raise invalid(f"input '{name}': BYTES element {i} runs past the end of its data")
        out[i] = bytes(mv[pos : pos + length])
        pos += length
    if pos != end:
        raise invalid(f"input '{name}': {end - pos} unexpected bytes after {count} BYTES elements")
    return out


def encode_bytes(array: np.ndarray) -> bytes:
    """Inverse of :func:`decode_bytes` (str elements are UTF-8 encoded)."""
    parts: list[bytes] = []
    for item in array.reshape(-1):
        b = item.encode() if isinstance(item, str) else bytes(item)
        parts.append(struct.pack("<I", len(b)))
        parts.append(b)
    return b"".join(parts)


def decode_raw(
    buf: bytes | memoryview, datatype: str, shape: tuple[int, ...], name: str
) -> np.ndarray:
    """Raw little-endian tensor bytes -> array of ``shape`` (BYTES: length-prefixed)."""
    count = math.prod(shape)  # 1 for a scalar shape ()
    if datatype == "BYTES":
        return decode_bytes(buf, count, name).reshape(shape)
    dtype = WIRE_DTYPES[datatype]
    expected = count * dtype.itemsize
    if len(buf) != expected:
        raise invalid(
            f"input '{name}': got {len(buf)} bytes of data, expected {expected} "
            f"for shape {list(shape)} of {datatype}"
        )
    arr = np.frombuffer(buf, dtype=dtype).reshape(shape)
    if datatype == "BOOL":
        return arr
    return arr.astype(NUMPY_DTYPES[datatype], copy=False)


def encode_raw(array: np.ndarray, datatype: str) -> bytes:
    if datatype == "BYTES":
        return encode_bytes(array)
    return np.ascontiguousarray(array, dtype=WIRE_DTYPES[datatype]).tobytes()
