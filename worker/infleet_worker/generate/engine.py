"""The engine loop on its own thread, and the async streaming API in front of it::

    async for out in engine.generate(prompt_ids, params):
        out.token_id, out.text, out.finish_reason

Requests and aborts cross into the loop thread through an inbox; outputs come back
to the caller's event loop with ``call_soon_threadsafe``. Leaving the ``async for``
early (client gone, task cancelled) aborts the sequence and frees its blocks.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import AsyncGenerator
from typing import Any

import torch

from infleet_worker.generate.core import EngineCore
from infleet_worker.generate.sequence import SamplingParams, Sequence, TokenOutput

log = logging.getLogger(__name__)


class QueueFull(Exception):
    """More sequences waiting than the engine takes."""


class EngineDead(Exception):
    """The loop thread died (a device error): the worker must exit."""


class GenerateEngine:
    def __init__(self, core: EngineCore) -> None:
        self.core = core
        self._cond = threading.Condition()
        self._adds: list[tuple[Sequence, Any]] = []
        self._aborts: list[int] = []
        self._stopping = False
        self._thread = threading.Thread(target=self._loop, name="generate-engine", daemon=True)
        self._outbox: list[tuple[asyncio.AbstractEventLoop, Any, TokenOutput]] = []
        self.error: BaseException | None = None
        self.dead = threading.Event()

    @property
    def max_model_len(self) -> int:
        return self.core.max_model_len

    @property
    def num_active(self) -> int:
        """Sequences submitted and not finished (waiting, running, or in the inbox)."""
        return len(self.core.requests) + len(self._adds)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify()
        self._thread.join(timeout=30)

    def _loop(self) -> None:
        core = self.core
        try:
            while True:
                with self._cond:
                    while not (self._adds or self._aborts or core.has_work or self._stopping):
                        self._cond.wait()
                    if self._stopping:
                        break
                    adds, self._adds = self._adds, []
                    aborts, self._aborts = self._aborts, []
                for seq, sink in adds:
                    core.add_sequence(seq, sink)
                for seq_id in aborts:
                    core.abort(seq_id)
                if core.has_work:
                    with torch.inference_mode():
                        core.step()
                self._flush()
        except BaseException as e:  # a device error: fail everyone, let the worker exit
            log.exception("the generation engine failed: %s", e)
            self.error = e
            core.abort_all("error", f"engine failure: {e}")
            self.dead.set()
        finally:
            core.abort_all("abort", "the engine stopped")
            self._flush()

    def _flush(self) -> None:
        """Hand the step's outputs to their event loops: one wake-up per loop per step."""
        if not self._outbox:
            return
        by_loop: dict[asyncio.AbstractEventLoop, list[tuple[Any, TokenOutput]]] = {}
        for loop, queue, out in self._outbox:
            by_loop.setdefault(loop, []).append((queue, out))
        self._outbox = []
        for loop, items in by_loop.items():
            with contextlib.suppress(RuntimeError):  # that loop closed: nobody listens
                loop.call_soon_threadsafe(_deliver, items)

    def submit(self, prompt_ids: list[int], params: SamplingParams, sink: Any) -> Sequence:
        if self.dead.is_set():
            raise EngineDead(f"the generation engine failed: {self.error}")
        seq = self.core.make_sequence(prompt_ids, params)
        with self._cond:
            if len(self.core.scheduler.waiting) + len(self._adds) >= self.core.opts.max_waiting:
                raise QueueFull(
                    f"{self.core.opts.max_waiting} sequences are already waiting; retry later"
                )
            self._adds.append((seq, sink))
            self._cond.notify()
        return seq

    def abort(self, seq_id: int) -> None:
        with self._cond:
            self._aborts.append(seq_id)
            self._cond.notify()

    async def generate(
        self, prompt_ids: list[int], params: SamplingParams
    ) -> AsyncGenerator[TokenOutput, None]:
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[TokenOutput] = asyncio.Queue()

        def sink(out: TokenOutput) -> None:  # runs on the engine thread
            self._outbox.append((loop, queue, out))

        seq = self.submit(prompt_ids, params, sink)
        done = False
        try:
            while not done:
                out = await queue.get()
                done = out.finish_reason is not None
                yield out
        finally:
            if not done:
                self.abort(seq.seq_id)


def _deliver(items: list[tuple[Any, TokenOutput]]) -> None:
    for queue, out in items:
        queue.put_nowait(out)
