"""A compact, safe binary encoding of named tensors for cache values.

What comes back from Redis is untrusted (another fleet, an operator's typo, a
truncated write, an attacker with Redis access): decoding never evaluates
anything (no pickle), checks every length against what is left, knows every
datatype, bounds ranks and counts, and requires the value to be consumed
exactly. Any problem raises :class:`CodecError`, which the cache turns into a
counted miss.

Layout (all integers little-endian)::

    magic  b"IFC"  | version u8 (=1) | count u16
    count times:
      name_len u16 | datatype code u8 | ndim u8 | name (UTF-8)
      dims  ndim x u64
      payload_len u64 | payload
    fixed-size datatypes: the C-order little-endian bytes (BOOL as one byte 0/1,
    BF16 as its raw uint16 bits);
    BYTES: per element (C order) length u32 + bytes.
"""

from __future__ import annotations

import struct
from math import prod
from typing import Any, get_args

import numpy as np

from infleet_worker.config import Datatype
from infleet_worker.tensors import NUMPY_DTYPES, Tensor

from .keys import canonical_array

MAGIC = b"IFC"
VERSION = 1
MAX_TENSORS = 1024
MAX_NDIM = 16
MAX_NAME = 1024

DATATYPES: tuple[Datatype, ...] = get_args(Datatype)
_CODE = {name: i for i, name in enumerate(DATATYPES)}

_HEAD = struct.Struct("<3sBH")
_TENSOR = struct.Struct("<HBB")
_U64 = struct.Struct("<Q")
_U32 = struct.Struct("<I")


class CodecError(ValueError):
    """The value is not a well-formed cache entry of this version."""


def _itemsize(datatype: str) -> int:
    return 1 if datatype == "BOOL" else NUMPY_DTYPES[datatype].itemsize


def encode(tensors: dict[str, Tensor]) -> bytes:
    """Encode named tensors (order kept). Raises CodecError for what it cannot encode."""
    if len(tensors) > MAX_TENSORS:
        raise CodecError("too many tensors")
    parts: list[bytes | memoryview] = [_HEAD.pack(MAGIC, VERSION, len(tensors))]
    for name, tensor in tensors.items():
        datatype = tensor.datatype
        code = _CODE.get(datatype)
        if code is None:
            raise CodecError(f"unknown datatype {datatype!r}")
        raw_name = name.encode("utf-8")
        array = np.asarray(tensor.array)
        if len(raw_name) > MAX_NAME or array.ndim > MAX_NDIM:
            raise CodecError("name too long or rank too high")
        parts.append(_TENSOR.pack(len(raw_name), code, array.ndim))
        parts.append(raw_name)
        parts.append(b"".join(_U64.pack(int(d)) for d in array.shape))
        if datatype == "BYTES":
            chunks: list[bytes] = []
            for item in array.reshape(-1):
                if isinstance(item, str):
                    item = item.encode("utf-8")
                elif not isinstance(item, bytes | bytearray | memoryview):
                    raise CodecError(f"BYTES element of type {type(item).__name__}")
                data = bytes(item)
                if len(data) > 0xFFFFFFFF:
                    raise CodecError("BYTES element too large")
                chunks.append(_U32.pack(len(data)))
                chunks.append(data)
            payload = b"".join(chunks)
            parts.append(_U64.pack(len(payload)))
            parts.append(payload)
        else:
            data_array = canonical_array(datatype, array)
            parts.append(_U64.pack(data_array.nbytes))
            parts.append(data_array.reshape(-1).view(np.uint8).data)
    return b"".join(parts)


def decode(value: bytes | bytearray | memoryview) -> dict[str, Tensor]:
    """Decode and validate a value; raises CodecError on anything unexpected."""
    buf = memoryview(value).cast("B") if not isinstance(value, bytes) else value
    end = len(buf)
    if end < _HEAD.size:
        raise CodecError("truncated header")
    magic, version, count = _HEAD.unpack_from(buf, 0)
    if magic != MAGIC:
        raise CodecError("bad magic (not an infleet cache entry)")
    if version != VERSION:
        raise CodecError(f"unsupported codec version {version}")
    if count > MAX_TENSORS:
        raise CodecError("too many tensors")
    pos = _HEAD.size
    out: dict[str, Tensor] = {}
    for _ in range(count):
        if pos + _TENSOR.size > end:
            raise CodecError("truncated tensor header")
        name_len, code, ndim = _TENSOR.unpack_from(buf, pos)
        pos += _TENSOR.size
        if code >= len(DATATYPES):
            raise CodecError(f"unknown datatype code {code}")
        if ndim > MAX_NDIM:
            raise CodecError("rank too high")
        if pos + name_len + 8 * ndim + 8 > end:
            raise CodecError("truncated name/shape")
        try:
            name = bytes(buf[pos : pos + name_len]).decode("utf-8")
        except UnicodeDecodeError:
            raise CodecError("tensor name is not UTF-8") from None
        if name in out:
            raise CodecError(f"duplicate tensor {name!r}")
        pos += name_len
        shape = tuple(_U64.unpack_from(buf, pos + 8 * i)[0] for i in range(ndim))
        pos += 8 * ndim
        (payload_len,) = _U64.unpack_from(buf, pos)
        pos += 8
        if payload_len > end - pos:
            raise CodecError("truncated payload")
        datatype: Datatype = DATATYPES[code]
        count_elems = prod(shape)
        array: np.ndarray[Any, Any]
        if datatype == "BYTES":
            array = _decode_bytes(buf, pos, payload_len, count_elems, shape)
        else:
            size = _itemsize(datatype)
            if count_elems * size != payload_len:
                raise CodecError("payload length does not match shape and datatype")
            if datatype == "BOOL":
                raw = np.frombuffer(buf, np.uint8, count_elems, pos)
                if raw.size and raw.max() > 1:
                    raise CodecError("BOOL byte other than 0/1")
                array = raw.astype(np.bool_)
            else:
                dtype = NUMPY_DTYPES[datatype]
                raw = np.frombuffer(buf, dtype.newbyteorder("<"), count_elems, pos)
                array = raw.astype(dtype)  # a writable native-order copy
            array = array.reshape(shape)
        pos += payload_len
        out[name] = Tensor(datatype, array)
    if pos != end:
        raise CodecError("trailing bytes after the last tensor")
    return out


def _decode_bytes(
    buf: bytes | memoryview, pos: int, length: int, count: int, shape: tuple[int, ...]
) -> np.ndarray[Any, Any]:
    # Each element takes at least its 4-byte length: bounds the array we allocate.
    if count * _U32.size > length:
        raise CodecError("BYTES payload shorter than its element count")
    stop = pos + length
    items: list[bytes] = []
    for _ in range(count):
        if pos + _U32.size > stop:
            raise CodecError("truncated BYTES element")
        (n,) = _U32.unpack_from(buf, pos)
        pos += _U32.size
        if n > stop - pos:
            raise CodecError("truncated BYTES element")
        items.append(bytes(buf[pos : pos + n]))
        pos += n
    if pos != stop:
        raise CodecError("BYTES payload has trailing bytes")
    array = np.empty(count, dtype=np.object_)
    array[:] = items
    return array.reshape(shape)
