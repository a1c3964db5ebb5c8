"""Shared memory between a front end and the engine core: a memfd, mapped by both.

Each front end creates two arenas and hands their file descriptors to the engine
core over the Unix socket (SCM_RIGHTS): ``inputs`` (the front end allocates, the
core reads) and ``outputs`` (the core allocates, the front end reads and frees).
Tensor bytes are written once into an arena and read in place as numpy views on
the other side: no pickling, one copy each way. A memfd needs no name, no
/dev/shm space and no clean-up: its memory goes when the last mapping closes.

The allocator is first fit over a sorted free list with coalescing; frees come
in any order. Offsets are 64-byte aligned. A tensor that does not fit travels
inline in its control message instead (correct, just slower).
"""

from __future__ import annotations

import bisect
import contextlib
import mmap
import os
from typing import Any

import numpy as np

ALIGN = 64


class Arena:
    def __init__(self, fd: int, size: int, *, owner: bool) -> None:
        self.fd = fd
        self.size = size
        self.mmap = mmap.mmap(fd, size)
        self.owner = owner
        # Free blocks as parallel sorted lists (start, length); one block at first.
        self._starts: list[int] = [0]
        self._lengths: list[int] = [size]
        self._live: dict[int, int] = {}  # start -> length

    @classmethod
    def create(cls, size: int, name: str = "infleet-arena") -> Arena:
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        return cls(fd, size, owner=True)

    @classmethod
    def attach(cls, fd: int) -> Arena:
        return cls(fd, os.fstat(fd).st_size, owner=False)

    @property
    def used(self) -> int:
        return sum(self._live.values())

    @property
    def largest_free(self) -> int:
        """The largest block alloc() could hand out now."""
        return max(self._lengths, default=0)

    def alloc(self, nbytes: int) -> int | None:
        """Offset of a fresh block of at least ``nbytes``, or None when none fits."""
        need = max(ALIGN, (nbytes + ALIGN - 1) // ALIGN * ALIGN)
        for i, length in enumerate(self._lengths):
            if length >= need:
                start = self._starts[i]
                if length == need:
                    del self._starts[i], self._lengths[i]
                else:
                    self._starts[i] = start + need
                    self._lengths[i] = length - need
                self._live[start] = need
                return start
        return None

    def free(self, start: int) -> None:
        length = self._live.pop(start, None)
        if length is None:
            return  # already freed (a duplicate message): harmless
        i = bisect.bisect_left(self._starts, start)
        # Coalesce with the next block, then with the previous one.
        if i < len(self._starts) and start + length == self._starts[i]:
            length += self._lengths[i]
            del self._starts[i], self._lengths[i]
        if i > 0 and self._starts[i - 1] + self._lengths[i - 1] == start:
            self._lengths[i - 1] += length
        else:
            self._starts.insert(i, start)
            self._lengths.insert(i, length)

    def view(self, offset: int, dtype: np.dtype[Any], shape: tuple[int, ...]) -> np.ndarray:
        """A numpy array over the arena's bytes (no copy); writable."""
        return np.ndarray(shape, dtype=dtype, buffer=self.mmap, offset=offset)

    def write(self, offset: int, array: np.ndarray) -> None:
        np.copyto(self.view(offset, array.dtype, array.shape), array, casting="no")

    def close(self) -> None:
        with contextlib.suppress(BufferError):  # numpy views alive: the mapping goes with them
            self.mmap.close()
        os.close(self.fd)
