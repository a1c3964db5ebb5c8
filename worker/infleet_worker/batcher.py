"""Dynamic batcher in this process: priority queues in front of one engine thread.

The in-process scheduler (tests, benchmarks, ``--engine-thread``). A worker pod
by default uses the engine core instead (core/), which forms batches by the same
rules (batch_queue.py) and runs them the same way (batch_run.py).

The scheduler task takes the head request, waits until ``max_batch_size`` rows
are queued or the head has waited ``max_queue_delay``, takes the batch and runs
it on the engine thread. While the engine works the loop keeps decoding; the
next batch is formed the moment the engine is free. A full queue refuses at
once; a request whose queue timeout passes is answered and never executed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Mapping
from concurrent.futures import Executor

from infleet_worker.batch_queue import BatchQueue, Overload, Queued, batch_limits, shed
from infleet_worker.batch_run import BatchOutcome, BatchTiming, FatalDeviceError, run_batch
from infleet_worker.engine.base import Engine, TensorInfo
from infleet_worker.protocol.errors import ErrorKind, InferError
from infleet_worker.scheduler import Computed
from infleet_worker.tensors import InferRequest

log = logging.getLogger("infleet_worker.batcher")


def level_of(priority: int, levels: int, default: int) -> int:
    """Triton: 0 or out of range = default level; 1 is the highest."""
    return default if priority <= 0 or priority > levels else priority


def queue_full(limit: int) -> InferError:
    return InferError(
        ErrorKind.UNAVAILABLE, f"queue is full ({limit} requests waiting); retry later"
    )


def shed_error(level: int, waiting: int) -> InferError:
    return InferError(
        ErrorKind.UNAVAILABLE,
        f"overloaded: priority level {level} is shed while {waiting} requests wait; retry later",
    )


def too_big(rows: int, limit: int) -> InferError:
    return InferError(
        ErrorKind.INVALID, f"batch size {rows} exceeds the model's max_batch_size {limit}"
    )


def timed_out(timeout_us: int) -> InferError:
    return InferError(
        ErrorKind.TIMEOUT,
        f"request timed out after waiting {timeout_us} us in the queue; it was not executed",
    )


class DynamicBatcher:
    def __init__(
        self,
        engine: Engine,
        executor: Executor,
        *,
        max_batch_size: int,
        max_queue_delay_us: int,
        max_queue_size: int,
        priority_levels: int = 1,
        default_priority_level: int = 1,
        default_timeout_us: int = 0,
        shed_queue_depth: float | None = None,
        overload: Overload | None = None,
        outputs: Mapping[str, TensorInfo] | None = None,
        on_batch: Callable[[BatchOutcome], None] | None = None,
        on_fatal: Callable[[str], None] | None = None,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_queue_delay_ns = max_queue_delay_us * 1000
        self.max_queue_size = max_queue_size
        self.priority_levels = priority_levels
        self.default_priority_level = default_priority_level
        self.default_timeout_us = default_timeout_us
        self.shed_queue_depth = shed_queue_depth
        self.normal = (max_batch_size, max_queue_delay_us * 1000)
        self.overload = overload
        self.outputs = outputs
        self.on_batch = on_batch
        self.on_fatal = on_fatal
        self.queue = BatchQueue(max_batch_size, priority_levels)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def queue_depth(self) -> int:
        return self.queue.count

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(
                self._schedule(), name="infleet-batcher"
            )

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for q in self.queue.drain():
            _fail(q, InferError(ErrorKind.UNAVAILABLE, "worker stopped before the request ran"))

    def submit(self, request: InferRequest) -> asyncio.Future[Computed]:
        if self.queue.count >= self.max_queue_size:
            raise queue_full(self.max_queue_size)
        rows = request.batch
        if rows > self.max_batch_size:
            raise too_big(rows, self.max_batch_size)
        loop = asyncio.get_running_loop()
        level = level_of(request.priority, self.priority_levels, self.default_priority_level)
        if shed(level, self.queue.count, self.shed_queue_depth):
            raise shed_error(level, self.queue.count)
        future: asyncio.Future[Computed] = loop.create_future()
        q = Queued(request.inputs, rows, level, time.perf_counter_ns(), future)
        timeout_us = request.timeout_us or self.default_timeout_us
        if timeout_us > 0:
            timer = loop.call_later(timeout_us / 1e6, self._expire, q, timeout_us)
            future.add_done_callback(lambda _f: timer.cancel())
        self.queue.add(q)
        # Wake the scheduler only when it has something new to decide.
        if (self.queue.count == 1 or self.queue.full()) and not self._wake.is_set():
            self._wake.set()
        return future

    def _expire(self, q: Queued, timeout_us: int) -> None:
        if self.queue.remove(q):
            _fail(q, timed_out(timeout_us))

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            head = self.queue.head()
            if head is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            limits = batch_limits(self.queue.count, self.normal, self.overload)
            self.queue.max_batch_size, self.max_queue_delay_ns = limits
            if not self.queue.full() and self.max_queue_delay_ns > 0:
                wait_ns = head.enqueued_ns + self.max_queue_delay_ns - time.perf_counter_ns()
                if wait_ns > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait_ns / 1e9)
                    continue
            batch = self.queue.take(head, time.perf_counter_ns())
            if not batch:
                continue
            try:
                outcome = await loop.run_in_executor(self.executor, self._execute, batch)
            except asyncio.CancelledError:
                for q in batch:
                    _fail(q, InferError(ErrorKind.UNAVAILABLE, "worker stopped"))
                raise
            except FatalDeviceError as e:
                err = InferError(ErrorKind.UNAVAILABLE, f"the device failed; retry: {e}")
                for q in batch:
                    _fail(q, err)
                if self.on_fatal is not None:
                    self.on_fatal(str(e))
                continue
            deliver(batch, outcome)
            if self.on_batch is not None:
                self.on_batch(outcome)

    def _execute(self, batch: list[Queued]) -> BatchOutcome:
        """Engine thread."""
        return run_batch(
            self.engine.run,
            [q.inputs for q in batch],
            [q.rows for q in batch],
            self.outputs,
        )


def deliver(batch: list[Queued], outcome: BatchOutcome) -> None:
    for q, result in zip(batch, outcome.results, strict=True):
        if isinstance(result, InferError):
            _fail(q, result)
        elif not q.payload.done():
            q.payload.set_result(Computed(result, q.queue_ns, outcome.timing))


def _fail(q: Queued, err: InferError) -> None:
    if not q.payload.done():
        q.payload.set_exception(err)


__all__ = ["BatchTiming", "Computed", "DynamicBatcher"]
