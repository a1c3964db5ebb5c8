"""The engine core process: the batcher, the engine and the device, for every front end.

``python -m infleet_worker.core.engine_core --config F --socket S --state-fd N
--front-ends K``. It loads the model, warms it up, then listens on a Unix socket.
Front ends connect (hello + their two arenas), send requests as small messages
whose tensors lie in shared memory, and get answers the same way.

One thread does everything, in a loop: read every message that arrived, queue
the requests, and when a batch is due run it (blocking) and answer its members.
While the engine runs, new requests wait in the kernel's socket buffers; the
next batch takes all of them. So transport work (in the front ends) can never
starve batch formation, and batches grow with load whichever front end took the
requests. No other thread shares the GIL with the engine.

Exit codes: 0 after the supervisor closes its connection; 1 load failure (the
message is written to ``--error-file``); 3 fatal device error (every waiting
request was answered with a retryable UNAVAILABLE first).
"""

from __future__ import annotations

import argparse
import heapq
import logging
import os
import selectors
import signal
import socket
import sys
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import NoReturn

from infleet_worker.batch_queue import BatchQueue, Queued, batch_limits, overload_of
from infleet_worker.batch_run import BatchOutcome, FatalDeviceError, run_batch
from infleet_worker.batcher import level_of
from infleet_worker.config import WorkerConfig
from infleet_worker.core import wire
from infleet_worker.core.arena import Arena
from infleet_worker.core.engine_thread import EngineThread
from infleet_worker.core.state import SharedState
from infleet_worker.engine.base import Engine, Signature
from infleet_worker.heap import settle_heap
from infleet_worker.logs import event, setup_logging
from infleet_worker.protocol.errors import ErrorKind
from infleet_worker.tensors import Tensor

log = logging.getLogger("infleet_worker.core")

DEADLINE_SLACK = 1024  # finished requests' deadlines kept before a compaction

SEND_TIMEOUT_S = 10.0  # a front end that reads nothing this long is dropped


@dataclass(eq=False)
class Conn:
    sock: socket.socket
    index: int = -2  # -1 = the supervisor; >= 0 a front end; -2 before hello
    inputs: Arena | None = None
    outputs: Arena | None = None
    deframer: wire.Deframer = field(default_factory=wire.Deframer)
    out: bytearray = field(default_factory=bytearray)
    requests: dict[int, Queued] = field(default_factory=dict)
    closed: bool = False


class EngineCore:
    def __init__(
        self,
        cfg: WorkerConfig,
        engine: Engine,
        state: SharedState,
        error_file: Path | None = None,
        *,
        overlap: bool = False,
    ) -> None:
        from prometheus_client import CollectorRegistry

        from infleet_worker.metrics import BatchMetrics
        from infleet_worker.stats import ModelStats

        self.cfg = cfg
        self.engine = engine
        self.state = state
        b = cfg.batching
        self.max_batch_size = b.max_batch_size
        if engine.max_batch_size > 0:
            self.max_batch_size = min(self.max_batch_size, engine.max_batch_size)
        self.delay_ns = b.max_queue_delay_microseconds * 1000
        self.normal = (self.max_batch_size, self.delay_ns)
        self.overload = overload_of(cfg, engine.max_batch_size)
        self.queue = BatchQueue(self.max_batch_size, b.priority_levels)
        self.outputs = {o.name: o for o in engine.outputs}
        self.registry = CollectorRegistry()
        self.metrics = BatchMetrics(cfg.model.name, cfg.model.version, self.registry)
        self.metrics.bind_queue_depth(lambda: self.queue.count)
        self.stats = ModelStats(cfg.model.name, cfg.model.version)
        self.sel = selectors.DefaultSelector()
        self.deadlines: list[tuple[int, int, Queued]] = []
        self._seq = 0
        self.running = True
        self.error_file = error_file  # why we exit, for the supervisor to report
        # GPU engines: batches run on a thread while this loop keeps serving messages.
        self.thread: EngineThread[list[Queued], BatchOutcome] | None = (
            EngineThread() if overlap else None
        )

    # -- connections -----------------------------------------------------------------
    def serve(self, listener: socket.socket) -> None:
        listener.setblocking(False)
        self.sel.register(listener, selectors.EVENT_READ, None)
        # stdin is the supervisor's pipe: EOF means it is gone (even if SIGKILLed).
        self.sel.register(sys.stdin, selectors.EVENT_READ, "stdin")
        if self.thread is not None:
            self.sel.register(self.thread.wake_fd, selectors.EVENT_READ, "engine")
        while self.running:
            self.step(self._timeout())

    def _accept(self, listener: socket.socket) -> None:
        sock, _ = listener.accept()
        sock.setblocking(True)
        sock.settimeout(SEND_TIMEOUT_S)
        msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 16, 2)
        conn = Conn(sock)
        (hello,) = conn.deframer.feed(msg)
        _, index, pid = hello
        conn.index = index
        if index >= 0:
            conn.inputs, conn.outputs = Arena.attach(fds[0]), Arena.attach(fds[1])
            self.state.received[index] = 0
        sock.setblocking(False)
        sock.sendall(wire.frame(("signature", self.signature())))
        self.sel.register(sock, selectors.EVENT_READ, conn)
        log.debug("connection %d from pid %d", index, pid)

    def signature(self) -> Signature:
        return Signature.of(self.engine)

    def _stdin(self) -> None:
        if not os.read(sys.stdin.fileno(), 4096):
            self.sel.unregister(sys.stdin)
            self.running = False

    def _read(self, conn: Conn) -> None:
        messages, closed = wire.read_available(conn.sock, conn.deframer)
        for msg in messages:
            self._handle(conn, msg)
        if closed:
            self._close(conn)

    def _close(self, conn: Conn) -> None:
        if conn.closed:
            return
        conn.closed = True
        self.sel.unregister(conn.sock)
        conn.sock.close()
        for q in conn.requests.values():
            self.queue.remove(q)
        conn.requests.clear()
        if conn.index == -1:  # the supervisor: our time is up
            self.running = False
        elif conn.index >= 0:
            log.info("front end %d disconnected", conn.index)

    # -- messages ------------------------------------------------------------------------
    def _handle(self, conn: Conn, msg: tuple) -> None:
        kind = msg[0]
        if kind == "infer":
            self._enqueue(conn, msg)
        elif kind == "free":
            assert conn.outputs is not None
            for off in msg[1]:
                conn.outputs.free(off)
        elif kind == "cancel":
            q = conn.requests.pop(msg[1], None)
            if q is not None and self.queue.remove(q):
                self._fail(conn, msg[1], ErrorKind.UNAVAILABLE, "cancelled by the client")
        elif kind == "stats":
            self._send(conn, ("stats", self._metrics_text(), self.stats.to_json()))

    def _enqueue(self, conn: Conn, msg: tuple) -> None:
        _, rid, priority, timeout_us, rows, descs = msg
        self.state.received[conn.index] += 1
        b = self.cfg.batching
        if rows > self.max_batch_size:  # the front end checks this; never trust it twice
            self._fail(conn, rid, ErrorKind.INVALID, f"batch of {rows} > {self.max_batch_size}")
            return
        inputs = {d[0]: wire.get(conn.inputs, d) for d in descs}
        level = level_of(priority, b.priority_levels, b.default_priority_level)
        now = time.perf_counter_ns()
        q = Queued(inputs, rows, level, now, (conn, rid))
        self.queue.add(q)
        conn.requests[rid] = q
        timeout_us = timeout_us or b.default_timeout_microseconds
        if timeout_us > 0:
            self._seq += 1
            heapq.heappush(self.deadlines, (now + timeout_us * 1000, self._seq, q))
            if len(self.deadlines) > 2 * self.queue.count + DEADLINE_SLACK:
                self._compact_deadlines()

    def _compact_deadlines(self) -> None:
        """Drop the deadlines of requests that already left the queue (ran, cancelled).

        They would otherwise stay until their timeout (30 s by default) with their
        request and its input views: at thousands of requests a second that is
        hundreds of thousands of live objects, hundreds of MB, and garbage-collector
        passes long enough to show in p99. Amortised O(1) per request."""
        self.deadlines = [d for d in self.deadlines if not d[2].gone]
        heapq.heapify(self.deadlines)

    def _send(self, conn: Conn, msg: tuple) -> None:
        conn.out += wire.frame(msg)

    def _fail(self, conn: Conn, rid: int, kind: ErrorKind, message: str) -> None:
        self._send(conn, ("fail", rid, kind.value, message))

    def _flush(self) -> None:
        for key in list(self.sel.get_map().values()):
            conn = key.data
            if not isinstance(conn, Conn) or not conn.out or conn.closed:
                continue
            data, conn.out = conn.out, bytearray()
            try:
                sent = conn.sock.send(data)  # non-blocking: the usual whole write
            except BlockingIOError:
                sent = 0
            except OSError:
                self._close(conn)
                continue
            if sent == len(data):
                continue
            try:  # a front end behind on reading: wait for it, bounded
                conn.sock.settimeout(SEND_TIMEOUT_S)
                conn.sock.sendall(memoryview(data)[sent:])
                conn.sock.setblocking(False)
            except OSError:
                self._close(conn)

    # -- the loop --------------------------------------------------------------------------
    def _timeout(self) -> float | None:
        head = self.queue.head()
        waits: list[int] = []
        if head is not None and not (self.thread is not None and self.thread.busy):
            if self.queue.full() or self.delay_ns == 0:
                return 0.0
            waits.append(head.enqueued_ns + self.delay_ns)
        if self.deadlines:
            waits.append(self.deadlines[0][0])
        if not waits:
            return None
        return max(0.0, (min(waits) - time.perf_counter_ns()) / 1e9)

    def step(self, timeout: float | None) -> None:
        for key, _ in self.sel.select(timeout):
            if key.data is None:
                self._accept(key.fileobj)  # type: ignore[arg-type]
            elif key.data == "stdin":
                self._stdin()
            elif key.data == "engine":
                assert self.thread is not None
                self.thread.woken()
            else:
                self._read(key.data)
        # Everything that arrived meanwhile joins the queue before a batch is formed.
        for key, _ in self.sel.select(0):
            if isinstance(key.data, Conn):
                self._read(key.data)
        now = time.perf_counter_ns()
        self._expire(now)
        thread = self.thread
        if thread is not None and (done := thread.finished()) is not None:
            batch, future = done
            error = future.exception()
            if isinstance(error, FatalDeviceError):
                self._device_lost(batch, str(error))
            elif error is not None:
                raise error
            self._complete(batch, future.result())
        self._adapt()
        head = self.queue.head()
        if (
            head is not None
            and not (thread is not None and thread.busy)
            and (self.queue.full() or self.delay_ns == 0 or now - head.enqueued_ns >= self.delay_ns)
        ):
            batch = self.queue.take(head, now)
            if thread is not None:
                thread.start(batch, partial(self._execute, batch))
            else:
                try:
                    outcome = self._execute(batch)
                except FatalDeviceError as e:
                    self._device_lost(batch, str(e))
                self._complete(batch, outcome)
        self.state.queue_depth = self.queue.count
        self._flush()

    def _adapt(self) -> None:
        """Adaptive batching: larger, later batches while the queue is past its depth."""
        rows, self.delay_ns = batch_limits(self.queue.count, self.normal, self.overload)
        if rows != self.queue.max_batch_size:
            self.queue.max_batch_size = rows
            state = "overloaded" if rows != self.normal[0] else "back to normal"
            event(
                log,
                "adaptive_batching",
                f"{state}: {self.queue.count} waiting; batches up to {rows} rows after "
                f"up to {self.delay_ns // 1000} us",
            )

    def _expire(self, now: int) -> None:
        while self.deadlines and self.deadlines[0][0] <= now:
            _, _, q = heapq.heappop(self.deadlines)
            if self.queue.remove(q):
                conn, rid = q.payload
                conn.requests.pop(rid, None)
                self._fail(
                    conn,
                    rid,
                    ErrorKind.TIMEOUT,
                    "request timed out in the queue; it was not executed",
                )

    def _execute(self, batch: list[Queued]) -> BatchOutcome:
        """Run one batch (on the engine thread when overlapping); FatalDeviceError escapes."""
        return run_batch(
            self.engine.run, [q.inputs for q in batch], [q.rows for q in batch], self.outputs
        )

    def _complete(self, batch: list[Queued], outcome: BatchOutcome) -> None:
        self._answer(batch, outcome)
        self.metrics.observe(outcome)
        self.stats.on_batch(outcome.timing)

    def _answer(self, batch: list[Queued], outcome: BatchOutcome) -> None:
        t = outcome.timing
        timing = (t.batch_size, t.requests, t.input_ns, t.infer_ns, t.output_ns)
        done: dict[Conn, list[tuple[Queued, dict[str, Tensor]]]] = {}
        for q, result in zip(batch, outcome.results, strict=True):
            conn, rid = q.payload
            if conn.closed:
                continue
            conn.requests.pop(rid, None)
            if isinstance(result, Exception):
                self._fail(conn, rid, result.kind, result.message)
            else:
                done.setdefault(conn, []).append((q, result))
        for conn, members in done.items():  # one block and one copy per output per front end
            descs, block = wire.put_block(conn.outputs, [r for _, r in members])
            users = len(members)
            for (q, _), d in zip(members, descs, strict=True):
                self._send(conn, ("done", q.payload[1], d, q.queue_ns, timing, block, users))

    def _device_lost(self, batch: list[Queued], message: str) -> NoReturn:
        event(log, "device_lost", f"fatal device error, exiting for a restart: {message}")
        if self.error_file is not None:
            self.error_file.write_text(f"fatal device error: {message}")
        for q in [*batch, *self.queue.drain()]:
            conn, rid = q.payload
            if not conn.closed:
                self._fail(
                    conn,
                    rid,
                    ErrorKind.UNAVAILABLE,
                    "the worker's device failed and it is restarting; retry",
                )
        self.state.queue_depth = 0
        self._flush()
        # No clean-up: a lost CUDA context can hang or raise in any further call.
        logging.shutdown()
        os._exit(3)

    def _metrics_text(self) -> str:
        from prometheus_client import generate_latest

        return generate_latest(self.registry).decode()


def overlap_batches(cfg: WorkerConfig) -> bool:
    """``server.overlapBatches``, or by default: when the engine runs on a GPU."""
    if cfg.server.overlap_batches is not None:
        return cfg.server.overlap_batches
    if cfg.engine.device.value == "cpu":
        return False
    import torch

    return bool(torch.cuda.is_available())


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="infleet-engine-core")
    p.add_argument("--config", required=True)
    p.add_argument("--socket", required=True)
    p.add_argument("--state-fd", type=int, required=True)
    p.add_argument("--front-ends", type=int, required=True)
    p.add_argument("--error-file", required=True)
    args = p.parse_args(argv)
    # The supervisor owns the lifecycle (a Ctrl-C or a SIGTERM to the process group
    # must not kill the model while it drains): we end when it closes our connection.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    cfg = WorkerConfig.from_file(args.config)
    setup_logging(cfg.server.log_format.value, cfg.server.log_level)
    state = SharedState(args.state_fd)
    from infleet_worker.engine.device import reserve_cpus
    from infleet_worker.engine.loader import load_engine

    reserve_cpus(args.front_ends)  # one core per front end stays off torch's threads
    try:
        engine = load_engine(cfg)
        engine.warmup()
    except BaseException as e:
        Path(args.error_file).write_text(f"{e}" if str(e) else traceback.format_exc())
        sys.exit(1)
    core = EngineCore(cfg, engine, state, Path(args.error_file), overlap=overlap_batches(cfg))
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(args.socket)
    listener.listen(256)
    event(log, "core_ready", f"engine core pid {os.getpid()} serving {engine.name}")
    settle_heap()
    try:
        core.serve(listener)
    finally:
        engine.close()


if __name__ == "__main__":
    main()
