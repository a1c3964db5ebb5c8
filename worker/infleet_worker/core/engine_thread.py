"""Run batches on a thread beside the engine core's loop (GPU engines).

On a GPU a batch is a few calls that wait on the device with the GIL released (CUDA
graph replay, the copies): meanwhile the loop can read, queue and answer the requests
of other batches, so the per-request Python work (~10 us each) overlaps the device
instead of adding to it. On CPU the engine's eager operators would hand the GIL back
and forth with the loop at every operator, so there the core runs batches inline.

The thread wakes the loop through a pipe when a batch is done.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Generic, TypeVar

T = TypeVar("T")
B = TypeVar("B")


class EngineThread(Generic[B, T]):
    def __init__(self) -> None:
        self.wake_fd, self._wake_w = os.pipe()
        os.set_blocking(self.wake_fd, False)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="infleet-engine")
        self.running: tuple[B, Future[T]] | None = None

    @property
    def busy(self) -> bool:
        return self.running is not None

    def start(self, batch: B, work: Callable[[], T]) -> None:
        assert self.running is None, "one batch at a time"
        future = self._pool.submit(work)
        # Wake the loop only once the future is done: a wake-up written before the
        # result is set could be read while finished() still says no, and the loop
        # would then sleep with a batch done and requests waiting.
        future.add_done_callback(lambda _f: os.write(self._wake_w, b"x"))
        self.running = (batch, future)

    def woken(self) -> None:
        with contextlib.suppress(BlockingIOError):
            os.read(self.wake_fd, 4096)

    def finished(self) -> tuple[B, Future[T]] | None:
        """The batch that just finished, with its future (done), or None."""
        if self.running is None or not self.running[1].done():
            return None
        done, self.running = self.running, None
        return done

    def close(self) -> None:
        self._pool.shutdown(wait=False)
        os.close(self.wake_fd)
        os.close(self._wake_w)
