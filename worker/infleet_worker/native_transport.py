"""The compiled transport (``infleet_transport``, worker/native), when it is built, and
what its gRPC and HTTP sides share on the event loop.

``make test``/``make demo`` build it (scripts/build_native.sh); without it the worker
serves HTTP on aiohttp and gRPC on grpcio (server.transport ``auto``)."""

from __future__ import annotations

import asyncio
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable
from typing import Any, Generic, TypeVar

try:
    import infleet_transport as native
except ImportError:  # not built
    native = None  # type: ignore[assignment]

A = TypeVar("A")  # one answer as the transport takes it


def available() -> bool:
    return native is not None


def require() -> None:
    if native is None:
        raise RuntimeError(
            "server.transport is native but the infleet_transport extension is not built "
            "(scripts/build_native.sh)"
        )


class NativeCalls(ABC, Generic[A]):
    """One transport server's calls on the event loop: its eventfd read with
    ``add_reader`` (``_drain`` takes the calls), a task per call, the answers of one
    loop turn handed over together (a batch's requests finish in the same turn: one
    lock, one wake of the transport's thread), and a stop that lets calls finish."""

    def __init__(self, server: Any) -> None:
        self._server = server
        self._tasks: set[asyncio.Task[None]] = set()
        self._answers: list[A] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @abstractmethod
    def _drain(self) -> None:
        """Take every queued call (``self._server.take()``) and start its work."""

    @abstractmethod
    def _hand_over(self, answers: list[A]) -> None:
        """Give a loop turn's answers to the transport in one call."""

    def _listen(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._server.event_fd(), self._drain)

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Task[None]:
        task: asyncio.Task[None] = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _answer(self, answer: A) -> None:
        if not self._answers:
            asyncio.get_running_loop().call_soon(self._send_answers)
        self._answers.append(answer)

    def _send_answers(self) -> None:
        answers, self._answers = self._answers, []
        self._hand_over(answers)

    async def _stop_calls(self, grace: float | None) -> None:
        """Stop accepting (GOAWAY; idle keep-alive connections close); calls in flight
        get up to ``grace`` seconds, then the transport stops."""
        self._server.stop_accepting()
        deadline = time.monotonic() + (grace or 0.0)
        while self._server.open_calls() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        if self._loop is not None:
            self._loop.remove_reader(self._server.event_fd())
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.to_thread(self._server.close)
