"""The cache value codec: exact round trip, and untrusted input never crashes."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from infleet_worker.cache.codec import DATATYPES, CodecError, decode, encode
from infleet_worker.tensors import NUMPY_DTYPES, Tensor

_FIXED = [d for d in DATATYPES if d != "BYTES"]
_shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5)


@st.composite
def tensors(draw: Any) -> Tensor:
    datatype = draw(st.sampled_from(DATATYPES))
    shape = draw(_shapes)
    if datatype == "BYTES":
        n = int(np.prod(shape)) if shape else 1
        items = draw(st.lists(st.binary(max_size=20), min_size=n, max_size=n))
        arr = np.empty(n, dtype=object)
        arr[:] = items
        return Tensor("BYTES", arr.reshape(shape))
    dtype = NUMPY_DTYPES[datatype]
    return Tensor(datatype, draw(hnp.arrays(dtype, shape)))


def _same(a: Tensor, b: Tensor) -> bool:
    if a.datatype != b.datatype or a.array.shape != b.array.shape:
        return False
    if a.datatype == "BYTES":
        return [bytes(x) for x in a.array.reshape(-1)] == list(b.array.reshape(-1))
    return b.array.dtype == a.array.dtype and a.array.tobytes() == b.array.tobytes()


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.dictionaries(st.text(min_size=1, max_size=12), tensors(), max_size=5))
def test_round_trip_every_datatype(named: dict[str, Tensor]) -> None:
    out = decode(encode(named))
    assert list(out) == list(named)
    for name in named:
        assert _same(named[name], out[name]), name
        assert out[name].array.flags.writeable


@pytest.mark.parametrize("datatype", DATATYPES)
def test_each_datatype_explicitly(datatype: str) -> None:
    if datatype == "BYTES":
        arr = np.array([[b"", b"\x00\xff"], [b"abc", b"d"]], dtype=object)
    elif datatype == "BOOL":
        arr = np.array([[True, False], [False, True]])
    else:
        arr = np.arange(4).astype(NUMPY_DTYPES[datatype]).reshape(2, 2)
    t = Tensor(datatype, arr)  # type: ignore[arg-type]
    assert _same(t, decode(encode({"x": t}))["x"])


def test_768_float_embedding_is_compact() -> None:
    t = Tensor("FP32", np.random.default_rng(0).random((1, 768), dtype=np.float32))
    value = encode({"embedding": t})
    assert len(value) < 768 * 4 + 64


def _valid() -> bytes:
    return encode(
        {
            "e": Tensor("FP32", np.ones((2, 3), np.float32)),
            "s": Tensor("BYTES", np.array([b"ab", b"c"], dtype=object)),
        }
    )


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"IF",
        b"\x80\x04\x95pickle",  # a pickle
        b"IFC\x02\x00\x00",  # future version
        b"XYZ\x01\x00\x00",
        b"IFC\x01\x01\x00",  # one tensor announced, none there
        b"IFC\x01\x00\x00trailing",
        # ndim 1, dims 2**60, payload tiny: must not allocate
        b"IFC\x01\x01\x00"
        + struct.pack("<HBB", 1, 10, 1)
        + b"x"
        + struct.pack("<QQ", 2**60, 4)
        + b"\x00" * 4,
        # BYTES with a huge element count
        b"IFC\x01\x01\x00"
        + struct.pack("<HBB", 1, 13, 1)
        + b"x"
        + struct.pack("<QQ", 2**40, 8)
        + b"\x00" * 8,
        # unknown datatype code
        b"IFC\x01\x01\x00" + struct.pack("<HBB", 1, 99, 0) + b"x" + struct.pack("<Q", 0),
        # non UTF-8 name
        b"IFC\x01\x01\x00"
        + struct.pack("<HBB", 1, 10, 0)
        + b"\xff"
        + struct.pack("<Q", 4)
        + b"\x00" * 4,
        # BOOL byte 2
        b"IFC\x01\x01\x00"
        + struct.pack("<HBB", 1, 0, 1)
        + b"x"
        + struct.pack("<QQ", 1, 1)
        + b"\x02",
    ],
)
def test_foreign_values_are_rejected(value: bytes) -> None:
    with pytest.raises(CodecError):
        decode(value)


def test_every_truncation_and_extension_is_rejected() -> None:
    value = _valid()
    for cut in range(len(value)):
        with pytest.raises(CodecError):
            decode(value[:cut])
    with pytest.raises(CodecError):
        decode(value + b"\x00")


@settings(max_examples=500, deadline=None)
@given(st.binary(max_size=200), st.integers(min_value=0, max_value=10_000))
def test_random_bytes_and_bit_flips_never_crash(noise: bytes, where: int) -> None:
    for value in (noise, b"IFC\x01" + noise):
        with contextlib.suppress(CodecError):
            decode(value)
    good = bytearray(_valid())
    good[where % len(good)] ^= 0xFF
    try:
        out = decode(bytes(good))
    except CodecError:
        return
    assert isinstance(out, dict)


def test_duplicate_names_rejected() -> None:
    one = encode({"x": Tensor("INT8", np.zeros(1, np.int8))})
    body = one[6:]
    with pytest.raises(CodecError):
        decode(b"IFC\x01\x02\x00" + body + body)
