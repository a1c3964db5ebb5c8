"""Per-queue request streams as strided ranges of the global arrival array.

Requests are never objects: a queue is a few ``[next, stop, stride]`` segments
of indices into the sorted arrival array. Round-robin gives each replica every
n-th request of an epoch (stride n); least-queue shares one stride-1 stream.
A batch or a drop is recorded as (start, count, stride), expanded with numpy
at the end.
"""

from __future__ import annotations

import numpy as np


class Stream:
    __slots__ = ("segs",)

    def __init__(self) -> None:
        self.segs: list[list[int]] = []  # [next index, stop (exclusive), stride]

    def add(self, first: int, stop: int, stride: int) -> None:
        self.segs.append([first, stop, stride])

    def close(self, g: int) -> None:
        """Stop the open segment at global index ``g`` (later ones go elsewhere)."""
        if self.segs and self.segs[-1][1] > g:
            self.segs[-1][1] = max(g, self.segs[-1][0])

    def nth(self, k: int, limit: int) -> int:
        """Global index of the k-th waiting request (0-based) below ``limit``, or -1."""
        for cur, stop, stride in self.segs:
            if stop > limit:
                stop = limit
            if cur >= stop:
                continue
            c = (stop - cur + stride - 1) // stride
            if k < c:
                return cur + k * stride
            k -= c
        return -1

    def count_before(self, g: int) -> int:
        n = 0
        for cur, stop, stride in self.segs:
            if stop > g:
                stop = g
            if cur < stop:
                n += (stop - cur + stride - 1) // stride
        return n

    def take(self, b: int, g: int, out: list[list[int]]) -> int:
        """Consume up to ``b`` requests with index < g, oldest first.

        Appends (start, count, stride) records to ``out``; returns how many.
        """
        taken = 0
        segs = self.segs
        for seg in segs:
            if taken >= b:
                break
            cur, stop, stride = seg
            lim = stop if stop < g else g
            if cur < lim:
                t = min((lim - cur + stride - 1) // stride, b - taken)
                out[0].append(cur)
                out[1].append(t)
                out[2].append(stride)
                seg[0] = cur + t * stride
                taken += t
        while len(segs) > 1 and segs[0][0] >= segs[0][1]:
            segs.pop(0)
        return taken

    def exhausted(self, limit: int) -> bool:
        return self.nth(0, limit) < 0


def expand(records: list[list[int]]) -> np.ndarray:
    """Global indices of (start, count, stride) records."""
    start = np.asarray(records[0], dtype=np.int64)
    count = np.asarray(records[1], dtype=np.int64)
    stride = np.asarray(records[2], dtype=np.int64)
    if not len(count):
        return np.zeros(0, dtype=np.int64)
    offsets = np.repeat(np.cumsum(count) - count, count)
    k = np.arange(int(count.sum()), dtype=np.int64) - offsets
    return np.repeat(start, count) + np.repeat(stride, count) * k
