"""``infleet-worker``: serve one model over Triton-compatible HTTP and gRPC.

Configuration: ``--config FILE`` (or ``$INFLEET_WORKER_CONFIG``), the JSON the
operator mounts; flags override it; ``$INFLEET_HTTP_PORT``, ``$INFLEET_GRPC_PORT``
and ``$INFLEET_METRICS_PORT`` override the ports of the file (flags win over env).

Exit codes: 0 after a graceful shutdown, 1 when the model cannot be loaded or the
configuration is invalid (the pod never becomes Ready), 2 for bad flags.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from infleet_worker.config import CacheMode, Precision, WorkerConfig
from infleet_worker.logs import event, setup_logging

log = logging.getLogger("infleet_worker.cli")

CONFIG_ENV = "INFLEET_WORKER_CONFIG"
PORT_ENVS = {
    "http_port": "INFLEET_HTTP_PORT",
    "grpc_port": "INFLEET_GRPC_PORT",
    "metrics_port": "INFLEET_METRICS_PORT",
}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="infleet-worker",
        description="Serve one model over KServe v2 / Triton HTTP and gRPC with dynamic batching.",
    )
    p.add_argument("--config", help=f"WorkerConfig JSON file (default ${CONFIG_ENV})")
    p.add_argument("--model-source", help="builtin://NAME, file:///path, python://mod:factory")
    p.add_argument("--model-name", help="name clients use (default: derived from the source)")
    p.add_argument("--model-version", help="model version (default 1)")
    p.add_argument(
        "--model-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="model parameter (repeatable)",
    )
    p.add_argument("--host", help="listen address (default 0.0.0.0)")
    p.add_argument("--http-port", type=int)
    p.add_argument("--grpc-port", type=int)
    p.add_argument("--metrics-port", type=int)
    p.add_argument("--max-batch-size", type=int)
    p.add_argument("--max-queue-delay-us", type=int)
    p.add_argument("--max-queue-size", type=int)
    p.add_argument("--priority-levels", type=int)
    p.add_argument(
        "--shed-queue-depth",
        type=float,
        help="refuse priority level L >= 2 at once while this / (L - 1) requests wait",
    )
    p.add_argument("--drain-seconds", type=float)
    p.add_argument("--device", choices=["auto", "cuda", "cpu"])
    p.add_argument(
        "--engine-thread",
        action="store_true",
        help="run everything in one process, the model on a thread (development); "
        "default: front-end processes and an engine core process",
    )
    p.add_argument(
        "--front-ends",
        type=int,
        help="front-end processes (default: one per CPU the pod may use, less one, max 8)",
    )
    p.add_argument(
        "--transport",
        choices=["auto", "native", "python"],
        help="HTTP and gRPC transport: native (compiled, Rust), python (aiohttp, grpcio), "
        "or auto (native when built)",
    )
    p.add_argument("--precision", choices=[level.value for level in Precision])
    p.add_argument("--cache-mode", choices=["off", "output", "embedding"])
    p.add_argument("--redis-url", help="redis://host:port/db (turns the output cache on)")
    p.add_argument("--log-format", choices=["text", "json"])
    p.add_argument("--log-level", choices=["debug", "info", "warning", "error"])
    return p


def _default_name(source: str) -> str:
    scheme, _, rest = source.partition("://")
    if scheme == "python":
        rest = rest.rpartition(":")[2]
    elif scheme == "file":
        rest = Path(rest).stem
    name = re.sub(r"[^a-z0-9._-]+", "-", rest.lower()).strip("-._")
    return name[:63] or "model"


def _set(doc: dict[str, Any], path: str, value: Any) -> None:
    if value is None:
        return
    *parents, leaf = path.split(".")
    for key in parents:
        doc = doc.setdefault(key, {})
    doc[leaf] = value


def build_config(
    args: argparse.Namespace, environ: dict[str, str] | os._Environ[str]
) -> WorkerConfig:
    """File (or env path) < port env vars < flags; validated by WorkerConfig."""
    path = args.config or environ.get(CONFIG_ENV)
    doc: dict[str, Any] = {}
    if path:
        try:
            doc = json.loads(Path(path).read_text())
        except (OSError, ValueError) as e:
            raise ValueError(f"cannot read config {path}: {e}") from None
        if not isinstance(doc, dict):
            raise ValueError(f"config {path} must hold a JSON object")
    _camelize(doc)
    for field, env in PORT_ENVS.items():
        if environ.get(env):
            try:
                _set(doc, f"server.{_camel(field)}", int(environ[env]))
            except ValueError:
                raise ValueError(f"${env} must be an integer, got {environ[env]!r}") from None
    if args.model_source:
        _set(doc, "model.source", args.model_source)
    model = doc.get("model", {})
    if args.model_name:
        _set(doc, "model.name", args.model_name)
    elif "source" in model and "name" not in model:
        _set(doc, "model.name", _default_name(model["source"]))
    _set(doc, "model.version", args.model_version)
    for item in args.model_param:
        key, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--model-param wants KEY=VALUE, got {item!r}")
        _set(doc, f"model.parameters.{key}", value)
    _set(doc, "server.host", args.host)
    _set(doc, "server.httpPort", args.http_port)
    _set(doc, "server.grpcPort", args.grpc_port)
    _set(doc, "server.metricsPort", args.metrics_port)
    _set(doc, "server.drainSeconds", args.drain_seconds)
    _set(doc, "server.logFormat", args.log_format)
    _set(doc, "server.logLevel", args.log_level)
    _set(doc, "batching.maxBatchSize", args.max_batch_size)
    _set(doc, "batching.maxQueueDelayMicroseconds", args.max_queue_delay_us)
    _set(doc, "batching.maxQueueSize", args.max_queue_size)
    _set(doc, "batching.priorityLevels", args.priority_levels)
    _set(doc, "server.shedQueueDepth", args.shed_queue_depth)
    _set(doc, "engine.device", args.device)
    if args.engine_thread:
        _set(doc, "server.engineProcess", False)
    _set(doc, "server.frontEnds", args.front_ends)
    _set(doc, "server.transport", args.transport)
    _set(doc, "engine.precision", args.precision)
    if args.redis_url:
        _set(doc, "cache.redis.url", args.redis_url)
        if not args.cache_mode and doc.get("cache", {}).get("mode", "off") == "off":
            _set(doc, "cache.mode", "output")
    _set(doc, "cache.mode", args.cache_mode)
    return WorkerConfig.model_validate(doc)


def _camel(key: str) -> str:
    head, *rest = key.split("_")
    return head + "".join(x[:1].upper() + x[1:] for x in rest)


def _camelize(doc: dict[str, Any]) -> None:
    """The file may use snake_case field names: rename them so flags replace, not duplicate."""
    for name, section in list(doc.items()):
        if not isinstance(section, dict):
            continue
        doc[_camel(name)] = doc.pop(name)
        for key in list(section):
            value = section.pop(key)
            section[_camel(key)] = value
            if isinstance(value, dict) and key not in ("parameters",):
                for sub in list(value):
                    value[_camel(sub)] = value.pop(sub)


async def run(cfg: WorkerConfig) -> int:
    """Serve until SIGTERM/SIGINT; returns the exit code."""
    from infleet_worker.generate import wants_generation

    task = cfg.model.task.value if cfg.model.task is not None else None
    try:
        generate = wants_generation(cfg.model.source, task)
    except ValueError as e:
        log.error("invalid configuration: %s", e, extra={"event": "config_invalid"})
        return 1
    if generate:
        from infleet_worker.generate.server import run_generate_worker

        return await run_generate_worker(cfg)
    event(
        log,
        "startup",
        f"starting model={cfg.model.name}:{cfg.model.version} source={cfg.model.source} "
        f"http={cfg.server.http_port} grpc={cfg.server.grpc_port} "
        f"metrics={cfg.server.metrics_port}",
        model=cfg.model.name,
        source=cfg.model.source,
    )
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    if cfg.server.engine_process:
        from infleet_worker.supervisor import run_pod

        return await run_pod(cfg, stop)
    return await run_in_process(cfg, stop)


async def run_in_process(cfg: WorkerConfig, stop: asyncio.Event) -> int:
    """``--engine-thread``: the model on a thread of this process (development)."""
    from prometheus_client import CollectorRegistry

    from infleet_worker.engine.base import ModelLoadError
    from infleet_worker.engine.device import reserve_cpus
    from infleet_worker.engine.loader import load_engine
    from infleet_worker.lifecycle import Worker

    reserve_cpus(1)  # the event loop's core
    try:
        engine = await asyncio.get_running_loop().run_in_executor(None, load_engine, cfg)
    except Exception as e:
        log.error("model load failed: %s", e, extra={"event": "model_load_failed"})
        return 1
    registry = CollectorRegistry()
    cache = None
    if cfg.cache.mode != CacheMode.OFF:
        from infleet_worker.cache.factory import build_cache

        try:
            cache = build_cache(cfg, registry, row_independent=engine.row_independent)
        except ValueError as e:
            log.error("cache configuration invalid: %s", e, extra={"event": "config_invalid"})
            return 1
    worker = Worker(cfg, engine, cache, registry)
    try:
        start = asyncio.create_task(worker.start())
        stop_wait = asyncio.create_task(stop.wait())
        await asyncio.wait({start, stop_wait}, return_when=asyncio.FIRST_COMPLETED)
        if not start.done():  # a signal during warm-up: nothing accepted yet
            start.cancel()
            await asyncio.gather(start, return_exceptions=True)
            return 0
        start.result()
        await stop_wait
        event(log, "signal", "termination signal received")
        await worker.drain()
        return 0
    except ModelLoadError as e:
        log.error("model warm-up failed: %s", e, extra={"event": "model_load_failed"})
        return 1
    except OSError as e:
        log.error("cannot start servers: %s", e, extra={"event": "startup_failed"})
        return 1
    finally:
        await worker.stop()


def main(argv: list[str] | None = None) -> None:
    # Idle OpenMP threads spin by default and starve the event loop that decodes the
    # next requests while the engine runs; must be set before torch is imported.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    args = build_parser().parse_args(argv)
    setup_logging(args.log_format or "text", args.log_level or "info")
    try:
        cfg = build_config(args, os.environ)
    except (ValueError, ValidationError) as e:
        log.error("invalid configuration: %s", e, extra={"event": "config_invalid"})
        sys.exit(1)
    if not args.log_format or not args.log_level:
        setup_logging(
            args.log_format or cfg.server.log_format.value, args.log_level or cfg.server.log_level
        )
    sys.exit(asyncio.run(run(cfg)))


if __name__ == "__main__":
    main()
