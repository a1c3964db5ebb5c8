"""What the request path submits work to: the in-process batcher or the engine core.

``InferenceService`` validates a request, looks it up in the cache, and hands the
rest to a ``Scheduler``: ``DynamicBatcher`` (batcher.py: the queue and the engine in
this process, for tests and ``--engine-thread``) or ``CoreClient`` (core/client.py:
the engine core process shared by every front-end process of the pod).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from infleet_worker.batch_run import BatchTiming
from infleet_worker.tensors import InferRequest, Tensor


@dataclass(slots=True)
class Computed:
    """One request's share of a batch."""

    outputs: dict[str, Tensor]
    queue_ns: int
    timing: BatchTiming
    # Gives the outputs' shared memory back (engine core); a no-op in process.
    release: Callable[[], None] = lambda: None


class Scheduler(Protocol):
    def submit(self, request: InferRequest) -> asyncio.Future[Computed]:
        """Queue a validated request; raises InferError (UNAVAILABLE) when full."""
        ...

    @property
    def queue_depth(self) -> int:
        """Requests waiting for a batch (the autoscaler's signal)."""
        ...

    def start(self) -> None: ...

    async def stop(self) -> None:
        """Fail whatever still waits with UNAVAILABLE."""
        ...
