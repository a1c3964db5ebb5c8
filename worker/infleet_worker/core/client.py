"""A front end's side of the engine core: the Scheduler that InferenceService submits to.

``submit`` writes the request's tensors once into this front end's input arena,
queues a small message, and returns a future. Messages produced in one turn of
the event loop go out in one write. Answers arrive as messages whose outputs lie
in the output arena; the service hands them to the protocol layer, which calls
``release`` after encoding so the core can reuse the space.

A full queue is refused here at once, from the shared counters (queued in the
core plus in transit from every front end), without a round trip. If the engine
core goes away, everything pending fails with a retryable UNAVAILABLE.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import socket
import time
from collections.abc import Callable
from typing import Any

from infleet_worker.batch_queue import shed
from infleet_worker.batch_run import BatchTiming
from infleet_worker.batcher import level_of, queue_full, shed_error, too_big
from infleet_worker.config import BatchingSpec
from infleet_worker.core import wire
from infleet_worker.core.arena import Arena
from infleet_worker.core.state import SharedState
from infleet_worker.engine.base import Signature
from infleet_worker.protocol.errors import ErrorKind, InferError, unavailable
from infleet_worker.scheduler import Computed
from infleet_worker.tensors import InferRequest, Tensor

log = logging.getLogger("infleet_worker.core.client")


class CoreClient:
    def __init__(
        self,
        socket_path: str,
        index: int,
        state: SharedState,
        batching: BatchingSpec,
        *,
        shed_queue_depth: float | None = None,
        arena_bytes: int,
    ) -> None:
        self.socket_path = socket_path
        self.index = index
        self.state = state
        self.max_queue_size = batching.max_queue_size
        self.levels = (batching.priority_levels, batching.default_priority_level)
        self.shed_queue_depth = shed_queue_depth
        self.max_batch_size = 0
        self.inputs = Arena.create(arena_bytes, f"infleet-fe{index}-in")
        self.outputs = Arena.create(arena_bytes, f"infleet-fe{index}-out")
        self.sock: socket.socket | None = None
        self.connected = False
        self.on_lost: Callable[[], None] | None = None
        self._ids = itertools.count(1)
        self._pending: dict[int, tuple[asyncio.Future[Computed], list[int]]] = {}
        self._deframer = wire.Deframer()
        self._out = bytearray()
        self._frees: list[int] = []
        self._block_users: dict[int, int] = {}  # output block -> requests not yet released
        self._flush_scheduled = False
        self._loop: asyncio.AbstractEventLoop | None = None

    # -- connection ----------------------------------------------------------------
    async def connect(self, timeout: float, alive: Callable[[], bool]) -> Signature:
        """Connect (retrying while the core loads), say hello, get the signature."""
        loop = asyncio.get_running_loop()
        deadline = time.monotonic() + timeout
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.socket_path)
                break
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline or not alive():
                    raise ConnectionError("the engine core did not come up") from None
                await asyncio.sleep(0.05)
        hello = wire.frame(("hello", self.index, os.getpid()))
        socket.send_fds(sock, [hello], [self.inputs.fd, self.outputs.fd])
        sock.setblocking(False)
        signature: Signature | None = None
        while signature is None:
            data = await loop.sock_recv(sock, 1 << 16)
            if not data:
                raise ConnectionError("the engine core closed the connection")
            for msg in self._deframer.feed(data):
                if msg[0] == "signature":
                    signature = msg[1]
        self.sock = sock
        self._loop = loop
        self.max_batch_size = signature.max_batch_size
        loop.add_reader(sock.fileno(), self._on_readable)
        self.connected = True
        self.state.sent[self.index] = 0
        self.state.connected[self.index] = 1
        return signature

    def _on_readable(self) -> None:
        assert self.sock is not None
        messages, closed = wire.read_available(self.sock, self._deframer)
        for msg in messages:
            self._on_message(msg)
        if closed:
            self._lost()

    def _lost(self) -> None:
        if not self.connected:
            return
        self.connected = False
        self.state.connected[self.index] = 0
        if self._loop is not None and self.sock is not None:
            self._loop.remove_reader(self.sock.fileno())
        self._fail_all("the engine core stopped; the worker is restarting, retry")
        if self.on_lost is not None:
            self.on_lost()

    def _fail_all(self, message: str) -> None:
        pending, self._pending = self._pending, {}
        for future, _ in pending.values():
            if not future.done():
                future.set_exception(InferError(ErrorKind.UNAVAILABLE, message))

    # -- Scheduler ------------------------------------------------------------------
    @property
    def queue_depth(self) -> int:
        return self.state.queue_depth

    def start(self) -> None:
        pass

    async def stop(self) -> None:
        self._fail_all("worker stopped before the request ran")
        if self.sock is not None:
            if self.connected and self._loop is not None:
                self._loop.remove_reader(self.sock.fileno())
            self.connected = False
            self.sock.close()
            self.sock = None

    def submit(self, request: InferRequest) -> asyncio.Future[Computed]:
        if not self.connected:
            raise unavailable("the engine core is not available; retry")
        waiting = self.state.waiting()
        if waiting >= self.max_queue_size:
            raise queue_full(self.max_queue_size)
        if self.shed_queue_depth is not None:
            level = level_of(request.priority, *self.levels)
            if shed(level, waiting, self.shed_queue_depth):
                raise shed_error(level, waiting)
        rows = request.batch
        if rows > self.max_batch_size > 0:
            raise too_big(rows, self.max_batch_size)
        rid = next(self._ids)
        offsets: list[int] = []
        descs = tuple(wire.put(self.inputs, n, t, offsets) for n, t in request.inputs.items())
        assert self._loop is not None
        future: asyncio.Future[Computed] = self._loop.create_future()
        self._pending[rid] = (future, offsets)
        future.add_done_callback(lambda f: self._cancelled(f, rid))
        self.state.sent[self.index] += 1
        msg = ("infer", rid, request.priority, request.timeout_us or 0, rows, descs)
        self._write(wire.frame(msg))
        return future

    def _cancelled(self, future: asyncio.Future[Computed], rid: int) -> None:
        if future.cancelled() and rid in self._pending and self.connected:
            self._write(wire.frame(("cancel", rid)))

    # -- messages ----------------------------------------------------------------------
    def _on_message(self, msg: tuple[Any, ...]) -> None:
        kind, rid = msg[0], msg[1]
        entry = self._pending.pop(rid, None)
        if entry is None:
            return
        future, offsets = entry
        for off in offsets:
            self.inputs.free(off)
        if kind == "done":
            _, _, descs, queue_ns, timing, block, users = msg
            outputs: dict[str, Tensor] = {d[0]: wire.get(self.outputs, d) for d in descs}
            release = _nothing
            if block >= 0:
                if block not in self._block_users:
                    self._block_users[block] = users
                release = self._releaser(block)
            if future.done():  # cancelled meanwhile
                release()
                return
            future.set_result(Computed(outputs, queue_ns, BatchTiming(*timing), release))
        elif not future.done():
            future.set_exception(InferError(ErrorKind(msg[2]), msg[3]))

    def _releaser(self, block: int) -> Callable[[], None]:
        """Gives back this request's share of a block; the last one frees the block."""

        def release() -> None:
            left = self._block_users[block] - 1
            if left:
                self._block_users[block] = left
                return
            del self._block_users[block]
            self._frees.append(block)
            self._schedule_flush()

        return release

    # -- writes --------------------------------------------------------------------------
    def _write(self, data: bytes) -> None:
        self._out += data
        self._schedule_flush()

    def _schedule_flush(self) -> None:
        if not self._flush_scheduled and self._loop is not None:
            self._flush_scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        """Everything this turn of the loop produced, in one write."""
        self._flush_scheduled = False
        if self._frees:
            self._out += wire.frame(("free", tuple(self._frees)))
            self._frees.clear()
        if not self._out or self.sock is None or not self.connected:
            self._out.clear()
            return
        try:
            sent = self.sock.send(self._out)
        except BlockingIOError:
            sent = 0
        except OSError:
            self._lost()
            return
        del self._out[:sent]
        if self._out:  # the core is behind: finish when the socket drains
            assert self._loop is not None
            self._loop.add_writer(self.sock.fileno(), self._drain)

    def _drain(self) -> None:
        assert self._loop is not None and self.sock is not None
        self._loop.remove_writer(self.sock.fileno())
        self._flush()

    def close(self) -> None:
        self.inputs.close()
        self.outputs.close()


def _nothing() -> None:
    pass
