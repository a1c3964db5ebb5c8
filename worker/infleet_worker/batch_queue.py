"""The dynamic batcher's queues, with no I/O: one FIFO per priority level.

Shared by the in-process batcher (batcher.py, awaited on an event loop) and the
engine core (core/engine_core.py, a plain select loop in its own process), so both
form batches by exactly the same rules:

- the head is the highest-priority (level 1 first, as Triton) oldest request;
- a batch is every queued request with the head's shape key (same input names,
  datatypes and per-item dims), oldest first, up to ``max_batch_size`` rows;
- requests removed early (timed out, cancelled) are skipped lazily.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from infleet_worker.config import WorkerConfig
from infleet_worker.tensors import Tensor

ShapeKey = tuple[tuple[str, str, tuple[int, ...]], ...]


def shape_key(inputs: dict[str, Tensor]) -> ShapeKey:
    return tuple(sorted((n, t.datatype, t.shape[1:]) for n, t in inputs.items()))


def shed(level: int, waiting: int, threshold: float | None) -> bool:
    """Priority shedding (autoscaling.overload.shedding): while ``waiting`` requests
    queue in this worker, level L >= 2 is refused at ``threshold / (L - 1)`` and more;
    level 1 never is (the simulator's rule, simulator/shedding.py)."""
    return threshold is not None and level >= 2 and waiting >= threshold / (level - 1)


@dataclass(frozen=True, slots=True)
class Overload:
    """Adaptive batching (autoscaling.overload.adaptiveBatching) in one worker: while
    more than ``depth`` requests wait, batches of up to ``max_batch_size`` rows are
    formed after up to ``delay_ns``: latency traded for throughput until new pods are
    Ready (the simulator's rule, simulator/fleet.py)."""

    max_batch_size: int
    delay_ns: int
    depth: float


def overload_of(cfg: WorkerConfig, engine_max_batch_size: int) -> Overload | None:
    """server.adaptiveBatching, within what the engine was built for."""
    a = cfg.server.adaptive_batching
    if a is None:
        return None
    rows = a.max_batch_size
    if engine_max_batch_size > 0:
        rows = min(rows, engine_max_batch_size)
    return Overload(rows, a.max_queue_delay_microseconds * 1000, a.queue_depth)


def batch_limits(
    waiting: int, normal: tuple[int, int], overload: Overload | None
) -> tuple[int, int]:
    """(max rows, max delay ns) for the next batch."""
    if overload is not None and waiting > overload.depth:
        return overload.max_batch_size, overload.delay_ns
    return normal


@dataclass(slots=True, eq=False)
class Queued:
    """One request waiting for a batch; ``payload`` is the owner's (a future, an id)."""

    inputs: dict[str, Tensor]
    rows: int
    level: int
    enqueued_ns: int
    payload: Any
    key: ShapeKey = ()
    gone: bool = False  # taken, timed out or cancelled
    queue_ns: int = field(default=0)

    def __post_init__(self) -> None:
        if not self.key:
            self.key = shape_key(self.inputs)


class BatchQueue:
    def __init__(self, max_batch_size: int, priority_levels: int = 1) -> None:
        self.max_batch_size = max_batch_size
        self._queues: list[deque[Queued]] = [deque() for _ in range(priority_levels)]
        self.count = 0  # requests waiting
        self.rows = 0  # rows waiting

    def add(self, q: Queued) -> None:
        self._queues[q.level - 1].append(q)
        self.count += 1
        self.rows += q.rows

    def remove(self, q: Queued) -> bool:
        """Take one request out (expired, cancelled); False if it already left."""
        if q.gone:
            return False
        q.gone = True
        self.count -= 1
        self.rows -= q.rows
        return True

    def head(self) -> Queued | None:
        for dq in self._queues:
            while dq and dq[0].gone:
                dq.popleft()
            if dq:
                return dq[0]
        return None

    def full(self) -> bool:
        """A whole batch is waiting: no reason to wait for more."""
        return self.rows >= self.max_batch_size

    def take(self, head: Queued, now_ns: int) -> list[Queued]:
        """The next batch: ``head`` and every compatible request after it, in order."""
        batch: list[Queued] = []
        rows = 0
        budget = 4 * self.max_batch_size + 16  # items scanned, bounds the cost of odd shapes
        for dq in self._queues:
            skipped: list[Queued] = []
            while dq and rows < self.max_batch_size and budget > 0:
                q = dq.popleft()
                if q.gone:
                    continue
                budget -= 1
                if q.key == head.key and rows + q.rows <= self.max_batch_size:
                    batch.append(q)
                    rows += q.rows
                else:
                    skipped.append(q)
            dq.extendleft(reversed(skipped))
            if rows >= self.max_batch_size or budget <= 0:
                break
        for q in batch:
            q.gone = True
            q.queue_ns = now_ns - q.enqueued_ns
        self.count -= len(batch)
        self.rows -= rows
        return batch

    def drain(self) -> list[Queued]:
        """Everything still waiting (shutdown), in no particular order."""
        left = [q for dq in self._queues for q in dq if not q.gone]
        for dq in self._queues:
            dq.clear()
        for q in left:
            q.gone = True
        self.count = self.rows = 0
        return left
