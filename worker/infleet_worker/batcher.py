"""Dynamic batcher: priority queues in front of one engine thread.

Requests wait in one FIFO per priority level (1 = highest, as Triton). The
scheduler task takes the highest-priority oldest request, waits until either
``max_batch_size`` rows are queued or that request has waited
``max_queue_delay``, then gathers every compatible request (same input names,
datatypes and non-batch dims) up to ``max_batch_size`` rows, concatenates them
along dim 0 and runs them: on the engine thread, or, for an engine in a child
process (one with ``run_async``), by awaiting it on the loop. While the engine
works, the event loop keeps decoding and encoding other requests; the next batch
is formed the moment the engine is free, from everything that queued meanwhile.

A full queue refuses at once; a request whose queue timeout passes is answered
with an error and never executed.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import Executor
from dataclasses import dataclass, field

import numpy as np

from infleet_worker.engine.base import Engine, EngineError
from infleet_worker.protocol.errors import ErrorKind, InferError
from infleet_worker.tensors import InferRequest, Tensor

log = logging.getLogger("infleet_worker.batcher")

ShapeKey = tuple[tuple[str, str, tuple[int, ...]], ...]


@dataclass(slots=True)
class BatchTiming:
    """Durations of one executed batch (ns)."""

    batch_size: int  # rows
    requests: int
    input_ns: int
    infer_ns: int
    output_ns: int


@dataclass(slots=True)
class Computed:
    """One request's share of a batch."""

    outputs: dict[str, Tensor]
    queue_ns: int
    timing: BatchTiming


@dataclass(slots=True, eq=False)
class _Pending:
    request: InferRequest
    key: ShapeKey
    rows: int
    level: int
    future: asyncio.Future[Computed]
    enqueued_ns: int
    timer: asyncio.TimerHandle | None = None
    gone: bool = False  # timed out or taken
    queue_ns: int = field(default=0)


def shape_key(inputs: dict[str, Tensor]) -> ShapeKey:
    return tuple(sorted((n, t.datatype, t.shape[1:]) for n, t in inputs.items()))


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
        on_batch: Callable[[BatchTiming], None] | None = None,
    ) -> None:
        self.engine = engine
        self.executor = executor
        self.max_batch_size = max_batch_size
        self.max_queue_delay_ns = max_queue_delay_us * 1000
        self.max_queue_size = max_queue_size
        self.priority_levels = priority_levels
        self.default_priority_level = default_priority_level
        self.default_timeout_us = default_timeout_us
        self.on_batch = on_batch
        self._queues: list[deque[_Pending]] = [deque() for _ in range(priority_levels)]
        self._count = 0  # requests waiting
        self._rows = 0  # rows waiting
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._busy = False
        # Engines in another process (engine/process.py) are awaited on the loop.
        self._run_async: Callable[[dict[str, Tensor]], Awaitable[dict[str, Tensor]]] | None = (
            getattr(engine, "run_async", None)
        )

    # -- state -------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return self._count

    @property
    def busy(self) -> bool:
        return self._busy or self._count > 0

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
        for q in self._queues:
            while q:
                p = q.popleft()
                if not p.gone and not p.future.done():
                    p.future.set_exception(
                        InferError(ErrorKind.UNAVAILABLE, "worker stopped before the request ran")
                    )
        self._count = self._rows = 0

    # -- submit ------------------------------------------------------------------
    def level_of(self, priority: int) -> int:
        """Triton: 0 or out of range = default level; 1 is the highest."""
        if priority <= 0 or priority > self.priority_levels:
            return self.default_priority_level
        return priority

    def submit(self, request: InferRequest) -> asyncio.Future[Computed]:
        """Queue a validated request; raises InferError(UNAVAILABLE) when full."""
        if self._count >= self.max_queue_size:
            raise InferError(
                ErrorKind.UNAVAILABLE,
                f"queue is full ({self.max_queue_size} requests waiting); retry later",
            )
        rows = request.batch
        if rows > self.max_batch_size:
            raise InferError(
                ErrorKind.INVALID,
                f"batch size {rows} exceeds the model's max_batch_size {self.max_batch_size}",
            )
        loop = asyncio.get_running_loop()
        level = self.level_of(request.priority)
        p = _Pending(
            request,
            shape_key(request.inputs),
            rows,
            level,
            loop.create_future(),
            time.perf_counter_ns(),
        )
        timeout_us = request.timeout_us or self.default_timeout_us
        if timeout_us > 0:
            p.timer = loop.call_later(timeout_us / 1e6, self._expire, p, timeout_us)
        self._queues[level - 1].append(p)
        self._count += 1
        self._rows += rows
        # Wake the scheduler only when it has something new to decide: the queue
        # was empty, or a full batch is now waiting.
        if (self._count == 1 or self._rows >= self.max_batch_size) and not self._wake.is_set():
            self._wake.set()
        return p.future

    def _expire(self, p: _Pending, timeout_us: int) -> None:
        if p.gone:
            return
        p.gone = True
        self._count -= 1
        self._rows -= p.rows
        if not p.future.done():
            p.future.set_exception(
                InferError(
                    ErrorKind.TIMEOUT,
                    f"request timed out after waiting {timeout_us} us in the queue; "
                    "it was not executed",
                )
            )

    # -- scheduling --------------------------------------------------------------
    def _head(self) -> _Pending | None:
        for q in self._queues:
            while q and q[0].gone:
                q.popleft()
            if q:
                return q[0]
        return None

    def _take(self, head: _Pending) -> list[_Pending]:
        batch: list[_Pending] = []
        rows = 0
        budget = 4 * self.max_batch_size + 16  # items scanned, bounds the cost of odd shapes
        for q in self._queues:
            skipped: list[_Pending] = []
            while q and rows < self.max_batch_size and budget > 0:
                p = q.popleft()
                if p.gone:
                    continue
                budget -= 1
                if p.key == head.key and rows + p.rows <= self.max_batch_size:
                    batch.append(p)
                    rows += p.rows
                else:
                    skipped.append(p)
            q.extendleft(reversed(skipped))
            if rows >= self.max_batch_size or budget <= 0:
                break
        now = time.perf_counter_ns()
        for p in batch:
            p.gone = True
            p.queue_ns = now - p.enqueued_ns
            if p.timer is not None:
                p.timer.cancel()
        self._count -= len(batch)
        self._rows -= rows
        return batch

    async def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            head = self._head()
            if head is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            if self._rows < self.max_batch_size and self.max_queue_delay_ns > 0:
                wait_ns = head.enqueued_ns + self.max_queue_delay_ns - time.perf_counter_ns()
                if wait_ns > 0:
                    self._wake.clear()
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(self._wake.wait(), wait_ns / 1e9)
                    continue
            batch = self._take(head)
            if not batch:
                continue
            self._busy = True
            try:
                if self._run_async is not None:  # the engine is I/O to us: no thread hop
                    result = await self._execute_async(batch, self._run_async)
                else:
                    result = await loop.run_in_executor(self.executor, self._execute, batch)
            except BaseException as e:
                if isinstance(e, asyncio.CancelledError):
                    for p in batch:
                        if not p.future.done():
                            p.future.set_exception(
                                InferError(ErrorKind.UNAVAILABLE, "worker stopped")
                            )
                    raise
                err = (
                    e
                    if isinstance(e, InferError)
                    else InferError(
                        ErrorKind.INTERNAL, f"engine failed on a batch of {len(batch)}: {e}"
                    )
                )
                if not isinstance(e, InferError | EngineError):
                    log.exception("engine raised on a batch")
                for p in batch:
                    if not p.future.done():
                        p.future.set_exception(err)
                continue
            finally:
                self._busy = False
            outputs, timing = result
            for p, out in zip(batch, outputs, strict=True):
                if not p.future.done():
                    p.future.set_result(Computed(out, p.queue_ns, timing))
            if self.on_batch is not None:
                self.on_batch(timing)

    def _execute(self, batch: list[_Pending]) -> tuple[list[dict[str, Tensor]], BatchTiming]:
        """Engine thread: merge, run, split."""
        merged, total, t0, t1 = _prepare(batch)
        with _engine_errors():
            out = self.engine.run(merged)
        return _finish(batch, out, total, t0, t1)

    async def _execute_async(
        self,
        batch: list[_Pending],
        run: Callable[[dict[str, Tensor]], Awaitable[dict[str, Tensor]]],
    ) -> tuple[list[dict[str, Tensor]], BatchTiming]:
        """On the loop, for engines in another process: merge, await the answer, split."""
        merged, total, t0, t1 = _prepare(batch)
        with _engine_errors():
            out = await run(merged)
        return _finish(batch, out, total, t0, t1)


@contextlib.contextmanager
def _engine_errors() -> Iterator[None]:
    try:
        yield
    except EngineError as e:
        raise InferError(ErrorKind.INTERNAL, f"model failed: {e}") from None


def _prepare(batch: list[_Pending]) -> tuple[dict[str, Tensor], int, int, int]:
    """Merged inputs, total rows, and the timestamps around the merge."""
    t0 = time.perf_counter_ns()
    merged, total = _merge(batch)
    return merged, total, t0, time.perf_counter_ns()


def _finish(
    batch: list[_Pending], out: dict[str, Tensor], total: int, t0: int, t1: int
) -> tuple[list[dict[str, Tensor]], BatchTiming]:
    t2 = time.perf_counter_ns()
    split = _split(batch, out, total)
    t3 = time.perf_counter_ns()
    return split, BatchTiming(total, len(batch), t1 - t0, t2 - t1, t3 - t2)


def _merge(batch: list[_Pending]) -> tuple[dict[str, Tensor], int]:
    """The batch's inputs concatenated along dim 0 (a lone request's, copied if read-only)."""
    if len(batch) == 1:
        merged = {}
        for n, t in batch[0].request.inputs.items():
            a = t.array
            merged[n] = t if a.flags.writeable else Tensor(t.datatype, a.copy())
    else:
        first = batch[0].request.inputs
        merged = {
            n: Tensor(
                t.datatype,
                np.concatenate([p.request.inputs[n].array for p in batch], axis=0),
            )
            for n, t in first.items()
        }
    return merged, sum(p.rows for p in batch)


def _split(batch: list[_Pending], out: dict[str, Tensor], total: int) -> list[dict[str, Tensor]]:
    """Each request's rows of every output; the engine must return ``total`` rows."""
    for n, t in out.items():
        if t.batch != total:
            raise InferError(
                ErrorKind.INTERNAL,
                f"engine returned {t.batch} rows for output '{n}', expected {total}",
            )
    if len(batch) == 1:
        return [out]
    split: list[dict[str, Tensor]] = []
    start = 0
    for p in batch:
        end = start + p.rows
        split.append({n: Tensor(t.datatype, t.array[start:end]) for n, t in out.items()})
        start = end
    return split
