"""The engine in a child process, driven from the event loop without a thread.

Why: torch releases the GIL inside each operator and must take it back after.
In one process with a busy event loop (gRPC and HTTP transport, decode, encode,
the batcher), every take-back can wait a whole switch interval (5 ms), and so
does every Python step of the thread that runs batches. Measured on 2 cores at
gRPC concurrency 64: a 64-row MLP batch that takes 0.7 ms alone took 2.7 ms in
the server. Here the model runs in a child process with its own interpreter (as
Triton's Python backend runs models in a stub process); the batcher sends each
merged batch over a socket *from the event loop itself* and awaits the answer
as ordinary I/O, so no thread of the serving process ever queues for the GIL on
the engine's behalf.

The child is ``python -m infleet_worker.engine.process`` (not multiprocessing,
which re-runs the parent's main script in the child) with two socket pairs
inherited as file descriptors: ``data`` carries batches (length-prefixed pickle,
read and written by asyncio in the parent); ``control`` carries the config and
the blocking calls (load report, warm-up, close, and ``run`` for callers outside
an event loop). The child waits on both. Pickle crosses no trust boundary: the
child is ours and loads the model the parent was configured with; clients' bytes
arrive as numpy arrays inside it.

If the child dies, every later batch fails with a clear EngineError and
``wait_dead`` resolves, so the worker exits non-zero (Kubernetes restarts it)
instead of staying Ready with nothing behind it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import traceback
from typing import Any

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import EngineError, ModelLoadError, TensorInfo
from infleet_worker.tensors import Tensor

log = logging.getLogger(__name__)

_HEADER = struct.Struct("!Q")
_Wire = dict[str, tuple[str, Any]]  # name -> (datatype, ndarray)


def _to_wire(tensors: dict[str, Tensor]) -> _Wire:
    return {n: (t.datatype, t.array) for n, t in tensors.items()}


def _from_wire(wire: _Wire) -> dict[str, Tensor]:
    return {n: Tensor(dt, a) for n, (dt, a) in wire.items()}  # type: ignore[arg-type]


def _frame(obj: Any) -> bytes:
    payload = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


def _recv_exact(sock: socket.socket, n: int) -> bytearray:
    buf = bytearray(n)
    view = memoryview(buf)
    got = 0
    while got < n:
        k = sock.recv_into(view[got:])
        if k == 0:
            raise EOFError("the other end closed the channel")
        got += k
    return buf  # read in place: no copy of a batch's bytes


def _recv(sock: socket.socket) -> Any:
    (n,) = _HEADER.unpack(_recv_exact(sock, _HEADER.size))
    return pickle.loads(_recv_exact(sock, n))


# -- child -------------------------------------------------------------------------------
def _answer(engine: Any, op: str, payload: Any) -> tuple[str, Any]:
    try:
        if op == "run":
            return "ok", _to_wire(engine.run(_from_wire(payload)))
        if op == "warmup":
            engine.warmup()
            return "ok", None
        if op == "close":
            engine.close()
            return "ok", None
        return "engine_error", f"unknown engine call {op!r}"
    except EngineError as e:
        return "engine_error", str(e)
    except Exception as e:
        return "engine_error", f"{type(e).__name__}: {e}"


def child_main(control: socket.socket, data: socket.socket, reserved_cpus: int) -> None:
    """Engine process: read the config, load, report, then answer calls until close/EOF."""
    # The parent owns the lifecycle: a terminal's Ctrl-C or a SIGTERM to the process
    # group must not kill the model while the parent drains; EOF ends us.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from infleet_worker.engine.device import reserve_cpus
    from infleet_worker.engine.loader import load_engine
    from infleet_worker.logs import setup_logging

    cfg = WorkerConfig.model_validate_json(_recv(control))
    setup_logging(cfg.server.log_format.value, cfg.server.log_level)
    reserve_cpus(reserved_cpus)
    try:
        engine = load_engine(cfg)
    except ModelLoadError as e:
        control.sendall(_frame(("error", str(e))))
        return
    except BaseException:
        control.sendall(_frame(("error", traceback.format_exc())))
        return
    signature = {
        "name": engine.name,
        "version": engine.version,
        "inputs": engine.inputs,
        "outputs": engine.outputs,
        "max_batch_size": engine.max_batch_size,
        "row_independent": bool(getattr(engine, "row_independent", False)),
    }
    control.sendall(_frame(("ready", signature)))
    closing = False
    try:
        while not closing:
            ready, _, _ = select.select([control, data], [], [])
            for sock in ready:
                op, payload = _recv(sock)
                sock.sendall(_frame(_answer(engine, op, payload)))
                closing = closing or op == "close"
    except (EOFError, OSError):  # the parent is gone
        pass


# -- parent ------------------------------------------------------------------------------
class ProcessEngine:
    """An Engine whose model runs in a child process; ``run_async`` needs no thread."""

    def __init__(
        self, cfg: WorkerConfig, *, reserved_cpus: int = 0, start_timeout: float = 900.0
    ) -> None:
        """Start the child and load the model; ``reserved_cpus``: see device.reserve_cpus."""
        control, child_control = socket.socketpair()
        data, child_data = socket.socketpair()
        self._control = control
        self._data = data
        self._lock = threading.Lock()  # one blocking call at a time
        self._reader: asyncio.StreamReader | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._async_lock: asyncio.Lock | None = None
        fds = (child_control.fileno(), child_data.fileno())
        env = dict(os.environ)  # the child imports what this process can import
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        self._proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "infleet_worker.engine.process",
                *map(str, fds),
                str(reserved_cpus),
            ],
            pass_fds=fds,
            stdin=subprocess.DEVNULL,
            env=env,
        )
        child_control.close()
        child_data.close()
        self.pid = self._proc.pid
        try:
            control.sendall(_frame(cfg.model_dump_json(by_alias=True)))
            sig = self._await_load(start_timeout)
        except BaseException:
            self._kill()
            raise
        self.name: str = sig["name"]
        self.version: str = sig["version"]
        self.inputs: list[TensorInfo] = sig["inputs"]
        self.outputs: list[TensorInfo] = sig["outputs"]
        self.max_batch_size: int = sig["max_batch_size"]
        self.row_independent: bool = sig["row_independent"]
        log.info("engine process %s serves %s", self.pid, self.name)

    def _await_load(self, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            ready, _, _ = select.select([self._control], [], [], 0.5)
            if ready:
                break
            if self._proc.poll() is not None:
                raise self._load_exit()
            if time.monotonic() > deadline:
                raise ModelLoadError(
                    f"the engine process did not load the model in {timeout:.0f} s"
                )
        try:
            kind, value = _recv(self._control)
        except EOFError:
            raise self._load_exit() from None
        if kind == "error":
            raise ModelLoadError(value)
        result: dict[str, Any] = value
        return result

    def _load_exit(self) -> ModelLoadError:
        code = self._proc.wait(5)
        hint = " (killed, e.g. for memory)" if code < 0 else ""
        return ModelLoadError(
            f"the engine process exited with code {code} while loading the model{hint}"
        )

    # -- calls ---------------------------------------------------------------------------
    def _died(self) -> EngineError:
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(0.5)
        code = self._proc.returncode
        how = f" with exit code {code}" if code is not None else ""
        return EngineError(f"the engine process (pid {self.pid}) died{how}")

    @staticmethod
    def _unwrap(reply: tuple[str, Any]) -> Any:
        status, value = reply
        if status != "ok":
            raise EngineError(value)
        return value

    def _call(self, op: str, payload: Any = None) -> Any:
        """A blocking call over the control channel (any thread but the loop's)."""
        with self._lock:
            try:
                self._control.sendall(_frame((op, payload)))
                reply = _recv(self._control)
            except (EOFError, OSError):
                raise self._died() from None
        return self._unwrap(reply)

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        result: _Wire = self._call("run", _to_wire(inputs))
        return _from_wire(result)

    async def run_async(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """One batch over the data channel, from the event loop; batches run one at a time."""
        if self._async_lock is None:
            self._async_lock = asyncio.Lock()
        async with self._async_lock:
            try:
                if self._writer is None:
                    self._loop = asyncio.get_running_loop()
                    self._reader, self._writer = await asyncio.open_connection(sock=self._data)
                assert self._reader is not None
                self._writer.write(_frame(("run", _to_wire(inputs))))
                await self._writer.drain()
                (n,) = _HEADER.unpack(await self._reader.readexactly(_HEADER.size))
                reply = pickle.loads(await self._reader.readexactly(n))
            except (asyncio.IncompleteReadError, ConnectionError, OSError):
                raise self._died() from None
        result: _Wire = self._unwrap(reply)
        return _from_wire(result)

    def warmup(self) -> None:
        try:
            self._call("warmup")
        except EngineError as e:  # the worker must not become Ready
            raise ModelLoadError(f"warm-up failed in the engine process: {e}") from None

    @property
    def alive(self) -> bool:
        return self._proc.poll() is None

    async def wait_dead(self) -> int:
        """Resolves with the child's exit code when it exits, for the worker to stop on."""
        try:
            fd = os.pidfd_open(self.pid)
        except (AttributeError, OSError):  # no pidfd (old kernel): poll
            while self._proc.poll() is None:
                await asyncio.sleep(0.5)
            return self._proc.returncode
        loop = asyncio.get_running_loop()
        exited: asyncio.Future[None] = loop.create_future()

        def on_exit() -> None:
            if not exited.done():
                exited.set_result(None)

        loop.add_reader(fd, on_exit)
        try:
            await exited
        finally:
            loop.remove_reader(fd)
            os.close(fd)
        return self._proc.wait()

    def close(self) -> None:
        if self.alive:
            with contextlib.suppress(EngineError):
                self._call("close")
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(10)
        self._kill()
        writer, loop = self._writer, self._loop
        if writer is not None and loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(writer.close)  # close() runs on the engine thread
        elif writer is None:
            self._data.close()
        self._control.close()

    def _kill(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait(5)


if __name__ == "__main__":  # the child: python -m infleet_worker.engine.process CTRL DATA N
    child_main(
        socket.socket(fileno=int(sys.argv[1])),
        socket.socket(fileno=int(sys.argv[2])),
        int(sys.argv[3]),
    )
