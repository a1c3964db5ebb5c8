"""A few integers every process of a worker pod reads and writes: one shared page.

The supervisor creates it (a memfd) and every child maps it. Each slot has one
writer, so no locks: aligned 8-byte stores are atomic on the platforms we run.

- ``ready`` / ``accepting``: the supervisor's word (Ready, drain phase);
- ``queue_depth``: the engine core's;
- per front end ``i``: ``inflight``, ``sent`` (requests handed to the core) and
  ``connected`` are the front end's, ``received`` the core's. Requests in transit
  (sent - received) count towards the queue bound, so a full queue is refused by
  any front end at once, without a round trip.
"""

from __future__ import annotations

import mmap
import os

import numpy as np

MAX_FRONT_ENDS = 64
_HEAD = 8  # ready, accepting, (spare), queue_depth, spare
_PER_FE = 4  # inflight, sent, received, connected
SIZE = 8 * (_HEAD + _PER_FE * MAX_FRONT_ENDS)


class SharedState:
    def __init__(self, fd: int) -> None:
        self.fd = fd
        self._mmap = mmap.mmap(fd, SIZE)
        self.a = np.ndarray((_HEAD + _PER_FE * MAX_FRONT_ENDS,), dtype=np.int64, buffer=self._mmap)
        fe = self.a[_HEAD:].reshape(MAX_FRONT_ENDS, _PER_FE)
        self.inflight = fe[:, 0]
        self.sent = fe[:, 1]
        self.received = fe[:, 2]
        self.connected = fe[:, 3]

    @classmethod
    def create(cls) -> SharedState:
        fd = os.memfd_create("infleet-state", 0)  # inherited by the children
        os.ftruncate(fd, SIZE)
        return cls(fd)

    def _flag(self, i: int) -> bool:
        return bool(self.a[i])

    @property
    def ready(self) -> bool:
        return self._flag(0)

    @ready.setter
    def ready(self, v: bool) -> None:
        self.a[0] = int(v)

    @property
    def accepting(self) -> bool:
        return self._flag(1)

    @accepting.setter
    def accepting(self, v: bool) -> None:
        self.a[1] = int(v)

    @property
    def queue_depth(self) -> int:
        return int(self.a[3])

    @queue_depth.setter
    def queue_depth(self, v: int) -> None:
        self.a[3] = v

    def waiting(self) -> int:
        """Queued in the core plus in transit from every front end."""
        return int(self.a[3]) + int(self.sent.sum() - self.received.sum())

    def total_inflight(self) -> int:
        return int(self.inflight.sum())

    def reset_front_end(self, i: int) -> None:
        self.inflight[i] = self.sent[i] = self.received[i] = self.connected[i] = 0
