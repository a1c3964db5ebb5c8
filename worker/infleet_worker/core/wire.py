"""Control messages between front ends and the engine core, and tensor descriptors.

A message is a 4-byte length and a pickled tuple of plain values (ints, strings,
tuples): small, and written many to one syscall. Tensor *bytes* never go through
pickle: a descriptor says where they lie in a shared arena (``offset >= 0``), or,
when the arena had no room (or the tensor is BYTES), carries them inline.

front end -> core                                core -> front end
("hello", index, pid)  + 2 fds (SCM_RIGHTS)      ("signature", dict)
("infer", rid, level, timeout_us, rows, descs)   ("done", rid, descs, queue_ns, timing,
                                                         block, users)
("free", (offset, ...))   outputs read            ("fail", rid, kind, message)
("cancel", rid)           client went away
"""

from __future__ import annotations

import math
import pickle
import socket
import struct
from typing import Any

import numpy as np

from infleet_worker.core.arena import Arena
from infleet_worker.protocol.datatypes import decode_bytes, encode_bytes
from infleet_worker.tensors import NUMPY_DTYPES, Tensor

HEADER = struct.Struct("<I")
# (name, datatype, shape, offset, nbytes, inline bytes or None)
Desc = tuple[str, str, tuple[int, ...], int, int, bytes | None]


def frame(msg: tuple[Any, ...]) -> bytes:
    payload = pickle.dumps(msg, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(payload)) + payload


class Deframer:
    """Splits a byte stream into messages; feed it whatever recv returned."""

    def __init__(self) -> None:
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        buf = self._buf
        buf += data
        out: list[tuple[Any, ...]] = []
        pos = 0
        n = len(buf)
        while n - pos >= 4:
            (size,) = HEADER.unpack_from(buf, pos)
            if n - pos - 4 < size:
                break
            out.append(pickle.loads(memoryview(buf)[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        if pos:
            del buf[:pos]
        return out


def read_available(sock: socket.socket, deframer: Deframer) -> tuple[list[tuple[Any, ...]], bool]:
    """Every whole message a non-blocking socket holds now, and whether the peer closed."""
    out: list[tuple[Any, ...]] = []
    while True:
        try:
            data = sock.recv(1 << 20)
        except BlockingIOError:
            return out, False
        except OSError:
            data = b""
        if not data:
            return out, True
        out += deframer.feed(data)


def put(arena: Arena | None, name: str, t: Tensor, offsets: list[int]) -> Desc:
    """Describe ``t``: its bytes written once into ``arena`` (offset kept in ``offsets``)."""
    a = t.array
    if t.datatype == "BYTES":
        return (name, t.datatype, a.shape, -1, 0, encode_bytes(a))
    if arena is not None:
        off = arena.alloc(a.nbytes)
        if off is not None:
            arena.write(off, a)
            offsets.append(off)
            return (name, t.datatype, a.shape, off, a.nbytes, None)
    return (name, t.datatype, a.shape, -1, a.nbytes, np.ascontiguousarray(a).tobytes())


def put_block(
    arena: Arena | None, members: list[dict[str, Tensor]]
) -> tuple[list[tuple[Desc, ...]], int]:
    """The outputs of one front end's requests of a batch, written with one allocation
    and one copy per output (``np.concatenate(..., out=arena)``): each request's
    descriptors, and the block's offset (-1 when nothing went to the arena). The front
    end frees the block when the last of its ``len(members)`` requests is encoded."""
    names = list(members[0])
    numeric = [n for n in names if members[0][n].datatype != "BYTES"]
    total = sum(m[n].array.nbytes for m in members for n in numeric)
    block = arena.alloc(total) if arena is not None and numeric and total > 0 else None
    if block is None:  # no room (or only BYTES): each tensor on its own
        return [tuple(put(None, n, m[n], []) for n in names) for m in members], -1
    assert arena is not None
    descs: list[list[Desc]] = [[] for _ in members]
    off = block
    for n in numeric:
        first = members[0][n]
        arrays = [m[n].array for m in members]
        rows = sum(a.shape[0] for a in arrays)
        shape = (rows, *first.array.shape[1:])
        np.concatenate(arrays, axis=0, out=arena.view(off, first.array.dtype, shape))
        for i, a in enumerate(arrays):
            descs[i].append((n, first.datatype, a.shape, off, a.nbytes, None))
            off += a.nbytes
    for n in names:
        if n not in numeric:
            for i, m in enumerate(members):
                descs[i].append(put(None, n, m[n], []))
    return [tuple(d) for d in descs], block


def get(arena: Arena | None, desc: Desc) -> Tensor:
    """The tensor a descriptor names: a view into the arena, or decoded inline bytes."""
    name, datatype, shape, off, _nbytes, inline = desc
    if datatype == "BYTES":
        assert inline is not None
        return Tensor(datatype, decode_bytes(inline, math.prod(shape), name).reshape(shape))  # type: ignore[arg-type]
    dtype = NUMPY_DTYPES[datatype]
    if off >= 0 and arena is not None:
        return Tensor(datatype, arena.view(off, dtype, shape))  # type: ignore[arg-type]
    assert inline is not None
    return Tensor(datatype, np.frombuffer(inline, dtype=dtype).reshape(shape))  # type: ignore[arg-type]
