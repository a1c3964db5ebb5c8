"""The worker pod's first process: starts the engine core and the front ends, and makes
them one server to the outside.

    supervisor (this process: /metrics, Ready, drain, restarts; no torch)
      ├── engine core   (core/engine_core.py: batcher + engine + device)
      └── front end x N (frontend.py: HTTP + gRPC on shared ports, cache)

- Ports: the supervisor binds the HTTP and gRPC ports with SO_REUSEPORT first (port
  0 becomes a real port) and keeps them, so a restarted front end gets the same.
- Ready (every front end's /v2/health/ready, gRPC ServerReady, ``infleet_ready``):
  the engine core is up, warm, and every front end is connected to it, and the
  pod is not draining. One flag in shared memory (core/state.py).
- /metrics on the metrics port: every process's series, summed (core/merge.py).
- SIGTERM: not Ready at once; requests are still taken for ``drainSeconds``; then
  new ones get 503 while everything accepted finishes; front ends stop, then the
  engine core; exit 0.
- The engine core dies (a fatal device error, an OOM kill): NotReady at once, the
  front ends answer what was pending with a retryable 503, exit 1 so Kubernetes
  restarts the pod. A front end dies: restarted on the same ports (the others
  keep serving); more than ``MAX_RESTARTS`` within a minute fails the pod (exit 1).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from infleet_worker.config import WorkerConfig
from infleet_worker.core import wire
from infleet_worker.core.merge import merge_metrics, merge_stats
from infleet_worker.core.state import MAX_FRONT_ENDS, SharedState
from infleet_worker.cpus import front_end_count
from infleet_worker.frontend import unix_get, unix_get_json
from infleet_worker.gpu_metrics import GpuCollector
from infleet_worker.logs import event
from infleet_worker.metrics import ready_gauge
from infleet_worker.servers import bound_port, reuse_port_socket, start_app

log = logging.getLogger("infleet_worker.supervisor")

MAX_RESTARTS = 5  # front-end restarts within RESTART_WINDOW_S before the pod fails
RESTART_WINDOW_S = 60.0
STOP_TIMEOUT_S = 15.0


class CoreLink:
    """The supervisor's own connection to the engine core (stats, and its life)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.deframer = wire.Deframer()
        self.lock = asyncio.Lock()
        self._inbox: list[tuple[Any, ...]] = []

    @classmethod
    async def open(cls, path: str) -> tuple[CoreLink, Any]:
        reader, writer = await asyncio.open_unix_connection(path)
        link = cls(reader, writer)
        writer.write(wire.frame(("hello", -1, os.getpid())))
        (_, signature) = await link.receive()
        return link, signature

    async def receive(self) -> tuple[Any, ...]:
        while not self._inbox:
            data = await self.reader.read(1 << 20)
            if not data:
                raise ConnectionError("the engine core closed its connection")
            self._inbox.extend(self.deframer.feed(data))
        return self._inbox.pop(0)

    async def stats(self) -> tuple[str, dict[str, Any]]:
        async with self.lock:
            self.writer.write(wire.frame(("stats",)))
            _, text, doc = await asyncio.wait_for(self.receive(), 10)
        return text, doc

    def close(self) -> None:
        self.writer.close()


class Pod:
    def __init__(self, cfg: WorkerConfig) -> None:
        self.cfg = cfg
        self.n = min(MAX_FRONT_ENDS, front_end_count(cfg.server.front_ends))
        self.dir = Path(tempfile.mkdtemp(prefix="infleet-worker-"))
        self.state = SharedState.create()
        self.registry = CollectorRegistry()
        self.ready_metric = ready_gauge(cfg.model.name, cfg.model.version, self.registry)
        self.ready_metric.set(0)
        self.registry.register(
            GpuCollector(cfg.model.name, cfg.model.version)
        )  # the pod's GPUs, once (not per process)
        self.core: asyncio.subprocess.Process | None = None
        self.link: CoreLink | None = None
        self.front_ends: list[asyncio.subprocess.Process | None] = [None] * self.n
        self.restarts: list[float] = []
        self.stopping = False
        self.failed = asyncio.Event()  # a front end kept dying
        self._reserved: list[Any] = []
        self._runners: list[web.AppRunner] = []
        self.http_port = self.grpc_port = self.metrics_port = 0

    # -- start --------------------------------------------------------------------------
    async def start_listening(self) -> None:
        s = self.cfg.server
        http = reuse_port_socket(s.host, s.http_port)
        grpc = reuse_port_socket(s.host, s.grpc_port)
        self._reserved = [http, grpc]
        self.http_port, self.grpc_port = http.getsockname()[1], grpc.getsockname()[1]
        server = s.model_copy(update={"http_port": self.http_port, "grpc_port": self.grpc_port})
        self.child_cfg = self.cfg.model_copy(update={"server": server})
        (self.dir / "config.json").write_text(self.child_cfg.model_dump_json(by_alias=True))
        metrics = web.Application()
        metrics.router.add_get("/metrics", self._metrics)
        runner = await start_app(metrics, s.host, s.metrics_port)
        self.metrics_port = bound_port(runner)
        internal = web.Application()
        internal.router.add_get("/stats", self._stats)
        irunner = web.AppRunner(internal, access_log=None)
        await irunner.setup()
        await web.UnixSite(irunner, str(self.dir / "supervisor.sock")).start()
        self._runners = [runner, irunner]

    async def _spawn(self, module: str, *args: str) -> asyncio.subprocess.Process:
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in sys.path if p)
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            "--config",
            str(self.dir / "config.json"),
            "--state-fd",
            str(self.state.fd),
            *args,
            stdin=asyncio.subprocess.PIPE,
            pass_fds=(self.state.fd,),
            env=env,
        )

    async def start_core(self) -> None:
        self.core = await self._spawn(
            "infleet_worker.core.engine_core",
            "--socket",
            str(self.dir / "core.sock"),
            "--front-ends",
            str(self.n),
            "--error-file",
            str(self.dir / "core-error.txt"),
        )

    async def start_front_end(self, i: int) -> None:
        self.state.reset_front_end(i)
        self.front_ends[i] = await self._spawn(
            "infleet_worker.frontend",
            "--index",
            str(i),
            "--socket",
            str(self.dir / "core.sock"),
            "--internal",
            str(self.dir / f"fe-{i}.sock"),
            "--supervisor",
            str(self.dir / "supervisor.sock"),
        )

    async def wait_core(self) -> str | None:
        """Until the core listens (None) or dies while loading (its message)."""
        assert self.core is not None
        path = str(self.dir / "core.sock")
        while self.core.returncode is None:
            if os.path.exists(path):
                try:
                    self.link, _ = await CoreLink.open(path)
                    return None
                except (ConnectionError, OSError):
                    pass
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.core.wait(), 0.05)
        err = self.dir / "core-error.txt"
        detail = err.read_text().strip() if err.exists() else ""
        code = self.core.returncode
        hint = " (killed, e.g. for memory)" if code < 0 else ""
        return detail or f"the engine core exited with code {code} while loading{hint}"

    async def wait_front_ends(self, timeout: float = 120.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all(self.state.connected[i] for i in range(self.n)):
                return True
            await asyncio.sleep(0.02)
        return False

    def set_ready(self, ready: bool) -> None:
        self.state.ready = ready
        self.ready_metric.set(1 if ready else 0)

    # -- watch ----------------------------------------------------------------------------
    async def watch_front_end(self, i: int) -> None:
        while not self.stopping:
            proc = self.front_ends[i]
            assert proc is not None
            code = await proc.wait()
            if self.stopping:
                return
            now = time.monotonic()
            self.restarts = [t for t in self.restarts if now - t < RESTART_WINDOW_S] + [now]
            if len(self.restarts) > MAX_RESTARTS:
                log.error(
                    "front end %d died (exit %s); %d restarts within %.0fs: failing the pod",
                    i,
                    code,
                    len(self.restarts),
                    RESTART_WINDOW_S,
                    extra={"event": "frontend_failed"},
                )
                self.failed.set()
                return
            log.warning(
                "front end %d died (exit code %s); restarting it",
                i,
                code,
                extra={"event": "frontend_restart"},
            )
            await self.start_front_end(i)

    # -- outside views ------------------------------------------------------------------
    async def _gather(self, url: str) -> list[Any]:
        calls = [
            unix_get_json(str(self.dir / f"fe-{i}.sock"), url)
            for i in range(self.n)
            if self.state.connected[i]
        ]
        results = await asyncio.gather(*calls, return_exceptions=True)
        return [r for r in results if not isinstance(r, BaseException)]

    async def _metrics(self, request: web.Request) -> web.Response:
        texts = [generate_latest(self.registry).decode()]
        fe_calls = [self._front_end_metrics(i) for i in range(self.n) if self.state.connected[i]]
        texts += [
            t for t in await asyncio.gather(*fe_calls, return_exceptions=True) if isinstance(t, str)
        ]
        if self.link is not None:
            with contextlib.suppress(Exception):
                texts.append((await self.link.stats())[0])
        return web.Response(text=merge_metrics(texts), content_type="text/plain")

    async def _front_end_metrics(self, i: int) -> str:
        return (await unix_get(str(self.dir / f"fe-{i}.sock"), "/metrics")).decode()

    async def _stats(self, request: web.Request) -> web.Response:
        docs = await self._gather("/stats")
        if self.link is not None:
            with contextlib.suppress(Exception):
                docs.append((await self.link.stats())[1])
        return web.json_response(merge_stats(docs))

    # -- stop -----------------------------------------------------------------------------
    async def drain(self) -> None:
        secs = self.cfg.server.drain_seconds
        self.set_ready(False)
        event(log, "drain", f"draining: not Ready, still serving for {secs}s", drain_seconds=secs)
        if secs > 0:
            await asyncio.sleep(secs)
        self.state.accepting = False
        inflight = self.state.total_inflight()
        event(
            log,
            "drain_closed",
            f"taking no new requests; finishing {inflight} in flight",
            inflight=inflight,
        )
        while self.state.total_inflight() > 0:
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        self.stopping = True
        self.set_ready(False)
        self.state.accepting = False
        await asyncio.gather(*(_stop(p) for p in self.front_ends if p is not None))
        if self.link is not None:
            self.link.close()
        if self.core is not None:
            await _stop(self.core)
        for r in self._runners:
            await r.cleanup()
        for sock in self._reserved:
            sock.close()
        shutil.rmtree(self.dir, ignore_errors=True)
        event(log, "shutdown", "shut down")


async def _stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None and proc.stdin is not None:
        with contextlib.suppress(OSError):
            proc.stdin.write(b"stop\n")
            proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
    except TimeoutError:
        proc.kill()
        await proc.wait()


async def run_pod(cfg: WorkerConfig, stop: asyncio.Event) -> int:
    """The whole pod's life; returns the exit code (see cli.py). On failure the reason
    is the last log line (Kubernetes shows it as the container's termination message)."""
    pod = Pod(cfg)
    reason = ""
    try:
        reason = await _serve(pod, cfg, stop)
    except OSError as e:
        reason = f"cannot start servers: {e}"
        log.error("%s", reason, extra={"event": "startup_failed"})
    finally:
        await pod.stop()
    if reason:
        log.error("exiting with code 1: %s", reason, extra={"event": "exit"})
        return 1
    return 0


async def _serve(pod: Pod, cfg: WorkerConfig, stop: asyncio.Event) -> str:
    """Start, serve, drain; '' after a graceful stop, else why the pod fails."""
    await pod.start_listening()
    event(
        log,
        "listening",
        f"listening http={pod.http_port} grpc={pod.grpc_port} metrics={pod.metrics_port} "
        f"model={cfg.model.name}:{cfg.model.version} front_ends={pod.n}",
        http_port=pod.http_port,
        grpc_port=pod.grpc_port,
        metrics_port=pod.metrics_port,
        model=cfg.model.name,
        version=cfg.model.version,
        source=cfg.model.source,
        front_ends=pod.n,
    )
    await pod.start_core()
    for i in range(pod.n):
        await pod.start_front_end(i)
    stop_wait = asyncio.create_task(stop.wait())
    loading = asyncio.create_task(pod.wait_core())
    await asyncio.wait({loading, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():  # a signal while loading: nothing accepted yet
        loading.cancel()
        return ""
    error = loading.result()
    if error is not None:
        log.error("model load failed: %s", error, extra={"event": "model_load_failed"})
        return f"model load failed: {error}"
    if not await pod.wait_front_ends():
        log.error("front ends did not connect", extra={"event": "startup_failed"})
        return "the front ends did not connect to the engine core"
    pod.state.accepting = True
    pod.set_ready(True)
    event(log, "ready", "ready", model=cfg.model.name, front_ends=pod.n)
    assert pod.core is not None
    core_dead = asyncio.create_task(pod.core.wait())
    failed = asyncio.create_task(pod.failed.wait())
    watchers = [asyncio.create_task(pod.watch_front_end(i)) for i in range(pod.n)]
    try:
        await asyncio.wait({core_dead, failed, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if core_dead.done():
            pod.set_ready(False)
            code = core_dead.result()
            err = pod.dir / "core-error.txt"
            lost = f": {err.read_text().strip()}" if code == 3 and err.exists() else ""
            log.error(
                "the engine core died (exit code %s)%s; exiting so the pod restarts",
                code,
                lost,
                extra={"event": "engine_died"},
            )
            await asyncio.sleep(0.2)  # the front ends answer what was pending (503)
            return f"the engine core died (exit code {code}){lost}"
        if failed.done():
            return "front-end processes kept dying"
        event(log, "signal", "termination signal received")
        await pod.drain()
        return ""
    finally:
        for w in watchers:
            w.cancel()
