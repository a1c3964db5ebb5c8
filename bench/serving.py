"""Serving load generator for any KServe v2 endpoint (infleet worker, Triton, ...).

Closed-loop load with tritonclient's asyncio clients (gRPC or HTTP): at each point
(concurrency x client batch) ``concurrency`` coroutines each keep one request in flight
for ``--warmup`` + ``--duration`` seconds; requests completed inside the measured window
give throughput (infer/s = requests/s, rows/s = infer/s x batch) and p50/p99 latency.
A few requests are checked first against a direct torch forward of builtin mlp with the
same parameters (the correctness of every server measured).

    # any endpoint
    python bench/serving.py --url 127.0.0.1:8001 --protocol grpc --model mlp --width 256
    # infleet worker and the Triton peer (bench/triton_peer.py), side by side
    python bench/serving.py --serve-infleet --serve-triton --concurrency 64 --batch 1,16
    # plus the floor of any grpcio server (bench/grpc_floor.py: answers zeros, no model)
    python bench/serving.py --serve-infleet --serve-triton --serve-floor --protocol grpc

``--serve-infleet`` starts ``infleet-worker`` (builtin mlp, ``--model-param``) on free
loopback ports; ``--serve-triton`` sets up (once) and starts NVIDIA Triton from the
``nvidia-pytriton`` wheel with the same model and dynamic-batching settings. Servers are
measured one after the other, never at the same time. Traffic goes to 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import math
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

from serverproc import free_port, stop_process, wait_http_ready

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent


def progress(msg: str) -> None:
    print(f"[serving {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


@dataclass
class Target:
    label: str
    url: str  # host:port for the protocol in use
    model: str
    stats_url: str | None = None  # host:port of its HTTP endpoint, for the batch statistics
    pid: int | None = None  # server process (with its children), for the CPU it uses


@dataclass
class Point:
    target: str
    protocol: str
    concurrency: int
    batch: int
    requests: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies: list[float] = field(default_factory=list)
    client_cpu: float = 0.0  # cores used by this load generator during the point
    server_cpu: float = math.nan  # cores used by the server's processes (when started here)
    server_batch: float = math.nan  # rows per executed batch (server statistics)
    batch_ms: float = math.nan  # compute input+infer+output per executed batch (same)

    @property
    def infer_per_s(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    @property
    def rows_per_s(self) -> float:
        return self.infer_per_s * self.batch

    def pct(self, q: float) -> float:
        """Latency percentile in ms (nan without samples)."""
        if not self.latencies:
            return math.nan
        return float(np.percentile(np.asarray(self.latencies), q)) * 1e3


# --- clients -------------------------------------------------------------------------


def make_client(protocol: str, url: str, concurrency: int) -> Any:
    if protocol == "grpc":
        import tritonclient.grpc.aio as grpcclient

        return grpcclient.InferenceServerClient(url)
    import tritonclient.http.aio as httpclient

    return httpclient.InferenceServerClient(url, conn_limit=max(concurrency, 1))


def make_inputs(protocol: str, name: str, data: np.ndarray) -> list[Any]:
    if protocol == "grpc":
        import tritonclient.grpc.aio as grpcclient

        g = grpcclient.InferInput(name, list(data.shape), "FP32")
        g.set_data_from_numpy(data)
        return [g]
    import tritonclient.http.aio as httpclient

    h = httpclient.InferInput(name, list(data.shape), "FP32")
    h.set_data_from_numpy(data, binary_data=True)
    return [h]


def make_outputs(protocol: str, name: str) -> list[Any]:
    if protocol == "grpc":
        import tritonclient.grpc.aio as grpcclient

        return [grpcclient.InferRequestedOutput(name)]
    import tritonclient.http.aio as httpclient

    return [httpclient.InferRequestedOutput(name, binary_data=True)]


async def infer_once(
    client: Any, protocol: str, args: argparse.Namespace, model: str, data: np.ndarray
) -> np.ndarray:
    result = await client.infer(
        model,
        make_inputs(protocol, args.input, data),
        outputs=make_outputs(protocol, args.output),
    )
    out: np.ndarray = result.as_numpy(args.output)
    return out


def model_counts(target: Target) -> tuple[int, int, int] | None:
    """(inference_count, execution_count, compute ns over all batches), if served."""
    import json
    import urllib.request

    if not target.stats_url:
        return None
    url = f"http://{target.stats_url}/v2/models/{target.model}/stats"
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            doc = json.loads(r.read())
        stats = doc["model_stats"][0]
        compute = sum(
            int(b[k]["ns"])
            for b in stats.get("batch_stats", [])
            for k in ("compute_input", "compute_infer", "compute_output")
        )
        return int(stats["inference_count"]), int(stats["execution_count"]), compute
    except (OSError, KeyError, IndexError, ValueError):
        return None


async def run_point(
    target: Target, protocol: str, args: argparse.Namespace, concurrency: int, batch: int
) -> Point:
    point = Point(target.label, protocol, concurrency, batch)
    client = make_client(protocol, target.url, concurrency)
    rng = np.random.default_rng(batch)
    data = rng.standard_normal((batch, args.width)).astype(np.float32)
    inputs = make_inputs(protocol, args.input, data)  # built once, reused by every request
    outputs = make_outputs(protocol, args.output)
    loop = asyncio.get_running_loop()
    t_start = loop.time() + args.warmup
    t_end = t_start + args.duration

    async def worker() -> None:
        while True:
            begin = loop.time()
            if begin >= t_end:
                return
            try:
                await client.infer(target.model, inputs, outputs=outputs)
            except Exception:
                point.errors += 1
                if point.errors > 100:
                    raise
                continue
            done = loop.time()
            if begin >= t_start and done <= t_end:
                point.requests += 1
                point.latencies.append(done - begin)

    async def server_cpu() -> None:  # the measured window only
        if target.pid is None:
            return
        await asyncio.sleep(max(0.0, t_start - loop.time()))
        s0 = tree_cpu_seconds(target.pid)
        await asyncio.sleep(max(0.0, t_end - loop.time()))
        point.server_cpu = (tree_cpu_seconds(target.pid) - s0) / args.duration

    before = await asyncio.to_thread(model_counts, target)
    cpu0 = time.process_time()
    try:
        await asyncio.gather(server_cpu(), *(worker() for _ in range(concurrency)))
    finally:
        await client.close()
    after = await asyncio.to_thread(model_counts, target)
    if before and after and after[1] > before[1]:
        point.server_batch = (after[0] - before[0]) / (after[1] - before[1])
        point.batch_ms = (after[2] - before[2]) / (after[1] - before[1]) / 1e6
    point.seconds = args.duration
    point.client_cpu = (time.process_time() - cpu0) / (args.warmup + args.duration)
    return point


def tree_cpu_seconds(pid: int) -> float:
    """CPU seconds (user + system) of ``pid`` and its descendants, from /proc."""
    tick = os.sysconf("SC_CLK_TCK")
    parent: dict[int, int] = {}
    ticks: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parent[int(entry)] = int(fields[1])
        ticks[int(entry)] = int(fields[11]) + int(fields[12])
    tree, frontier = {pid}, [pid]
    while frontier:
        p = frontier.pop()
        kids = [c for c, pp in parent.items() if pp == p and c not in tree]
        tree.update(kids)
        frontier += kids
    return sum(ticks.get(p, 0) for p in tree) / tick


# --- correctness ---------------------------------------------------------------------


def reference_model(params: dict[str, str]) -> Any:
    import torch

    torch.set_num_threads(1)  # the client's torch stays off the servers' cores
    from infleet_worker.models import builtin_factory

    return builtin_factory("mlp")(params).eval()


async def check_outputs(
    target: Target, protocol: str, args: argparse.Namespace, params: dict[str, str]
) -> float:
    """Max abs error of a few server outputs against a direct torch forward; raises if off."""
    import torch

    model = reference_model(params)
    client = make_client(protocol, target.url, 4)
    rng = np.random.default_rng(1234)
    worst = 0.0
    try:
        cases = [
            rng.standard_normal((b, args.width)).astype(np.float32)
            for b in (1, 3, min(16, args.max_batch_size))
        ]
        # concurrent too, so the check also covers rows that were batched together
        got = await asyncio.gather(
            *(infer_once(client, protocol, args, target.model, c) for c in cases)
        )
        for data, out in zip(cases, got, strict=True):
            with torch.inference_mode():
                ref = model(torch.from_numpy(data))[0].numpy()
            if out.shape != ref.shape:
                raise AssertionError(f"{target.label}: output shape {out.shape} != {ref.shape}")
            err = float(np.max(np.abs(out - ref)))
            scale = float(np.max(np.abs(ref))) or 1.0
            if err > args.atol * max(1.0, scale):
                raise AssertionError(
                    f"{target.label}: max |server - torch| = {err:.3g} (|ref| max {scale:.3g})"
                )
            worst = max(worst, err)
    finally:
        await client.close()
    return worst


# --- servers -------------------------------------------------------------------------


def worker_env() -> dict[str, str]:
    """This environment with the checkout's ``worker/`` importable (any of the venvs)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO_ROOT / "worker"), env.get("PYTHONPATH", "")) if p
    )
    return env


@contextlib.contextmanager
def serve_infleet(
    args: argparse.Namespace, params: dict[str, str], log_dir: Path
) -> Iterator[tuple[int, int, int]]:
    http, grpc, metrics = free_port(), free_port(), free_port()
    worker = [sys.executable, "-m", "infleet_worker.cli"]  # = infleet-worker
    if args.infleet_profile:  # cProfile of the worker's main thread (the event loop)
        worker[1:1] = ["-m", "cProfile", "-o", str(args.infleet_profile)]
    cmd = [*worker, "--model-source", "builtin://mlp", "--model-name", args.model]
    for k, v in params.items():
        cmd += ["--model-param", f"{k}={v}"]
    cmd += [
        f"--http-port={http}",
        f"--grpc-port={grpc}",
        f"--metrics-port={metrics}",
        f"--max-batch-size={args.max_batch_size}",
        f"--max-queue-delay-us={args.max_queue_delay_us}",
        "--host=127.0.0.1",
        "--drain-seconds=0",
        "--device=cpu",
        "--log-level=warning",
        *args.infleet_arg,
    ]
    progress("starting infleet: " + " ".join(cmd))
    log_path = log_dir / "infleet.log"
    proc = popen_logged(cmd, log_path, env=worker_env())
    with running("infleet", proc, log_path, http, grpc, model_ready(args, http, proc)) as ports:
        yield ports
    if args.infleet_profile and args.infleet_profile.exists():
        import pstats

        progress(f"infleet main-thread profile {args.infleet_profile}, top 30 by own time:")
        pstats.Stats(str(args.infleet_profile), stream=sys.stderr).sort_stats(
            "tottime"
        ).print_stats(30)


def popen_logged(
    cmd: list[str], log_path: Path, env: dict[str, str] | None = None
) -> subprocess.Popen[bytes]:
    """Start ``cmd`` with stdout and stderr in ``log_path``."""
    with open(log_path, "wb") as log:  # the child keeps its own descriptor
        return subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)


def model_ready(
    args: argparse.Namespace, http: int, proc: subprocess.Popen[bytes]
) -> Callable[[], None]:
    route = f"/v2/models/{args.model}/ready"
    return lambda: wait_http_ready(http, proc, args.start_timeout, route)


@contextlib.contextmanager
def running(
    label: str,
    proc: subprocess.Popen[bytes],
    log_path: Path,
    http: int,
    grpc: int,
    ready: Callable[[], None],
) -> Iterator[tuple[int, int, int]]:
    """Wait for ``ready()``; yield (http port, grpc port, pid); stop ``proc`` however it ends."""
    try:
        ready()
        progress(f"{label} ready (http {http}, grpc {grpc}; log {log_path})")
        yield http, grpc, proc.pid
    finally:
        stop_process(proc)


def load_triton_peer() -> ModuleType:
    spec = importlib.util.spec_from_file_location("triton_peer", BENCH_DIR / "triton_peer.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def serve_triton(
    args: argparse.Namespace, params: dict[str, str], log_dir: Path
) -> Iterator[tuple[int, int, int]]:
    peer = load_triton_peer()
    tdir = peer.ensure_installed()
    repo = log_dir / "triton-repo"
    model_params = {k: v for k, v in params.items() if k != "width"}
    peer.build_repository(
        repo,
        model_name=args.model,
        params=model_params,
        width=args.width,
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        tritonserver_dir=tdir,
    )
    http, grpc, metrics = free_port(), free_port(), free_port()
    log_path = log_dir / "triton.log"
    proc = peer.start(repo, http, grpc, metrics, tritonserver_dir=tdir, log_file=log_path)
    with running("triton", proc, log_path, http, grpc, model_ready(args, http, proc)) as ports:
        yield ports


@contextlib.contextmanager
def serve_floor(
    args: argparse.Namespace, params: dict[str, str], log_dir: Path
) -> Iterator[tuple[int, int, int]]:
    """bench/grpc_floor.py: grpcio answering with zeros (gRPC only, no HTTP side)."""
    grpc_port = free_port()
    cmd = [
        sys.executable,
        str(BENCH_DIR / "grpc_floor.py"),
        f"--port={grpc_port}",
        f"--model={args.model}",
        f"--output={args.output}",
        f"--width={args.width}",
        f"--server={args.floor_server}",
    ]
    progress("starting grpc-floor: " + " ".join(cmd))
    log_path = log_dir / "grpc-floor.log"
    proc = popen_logged(cmd, log_path)

    def ready() -> None:
        wait_ready_grpc(f"127.0.0.1:{grpc_port}", proc, args.start_timeout)

    with running("grpc-floor", proc, log_path, 0, grpc_port, ready) as ports:
        yield ports


def wait_ready_grpc(url: str, proc: subprocess.Popen[bytes], timeout: float) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(url)
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited with code {proc.returncode} before ready")
            with contextlib.suppress(Exception):
                if client.is_server_ready():
                    return
            time.sleep(0.3)
    finally:
        client.close()
    raise TimeoutError(f"server not ready on {url} after {timeout:.0f} s")


# --- main ----------------------------------------------------------------------------


def fmt_row(p: Point) -> str:
    return (
        f"{p.target:<10} {p.protocol:<5} {p.concurrency:>5} {p.batch:>5} "
        f"{p.infer_per_s:>10.1f} {p.rows_per_s:>10.1f} {p.pct(50):>9.2f} {p.pct(99):>9.2f}"
        f" {p.server_batch:>6.1f} {p.server_cpu:>6.2f} {p.client_cpu:>6.2f} {p.errors:>6}"
    )


HEADER = (
    f"{'target':<10} {'proto':<5} {'conc':>5} {'batch':>5} {'infer/s':>10} {'rows/s':>10} "
    f"{'p50 ms':>9} {'p99 ms':>9} {'sbatch':>6} {'server':>6} {'client':>6} {'errors':>6}"
)


def print_table(points: list[Point]) -> None:
    print(HEADER)
    for p in points:
        print(fmt_row(p))


def print_comparison(points: list[Point], a: str = "infleet", b: str = "triton") -> None:
    by_key = {(p.target, p.protocol, p.concurrency, p.batch): p for p in points}
    rows = []
    for p in points:
        if p.target != a:
            continue
        q = by_key.get((b, p.protocol, p.concurrency, p.batch))
        if q is None:
            continue
        rows.append((p, q))
    if not rows:
        return
    print()
    print(
        f"{'proto':<5} {'conc':>5} {'batch':>5} | {a + ' rows/s':>14} {b + ' rows/s':>14} "
        f"{'ratio':>6} | {a + ' p99':>12} {b + ' p99':>11} {'ratio':>6}"
    )
    for p, q in rows:
        tput = p.rows_per_s / q.rows_per_s if q.rows_per_s else math.nan
        p99 = p.pct(99) / q.pct(99) if q.latencies else math.nan
        print(
            f"{p.protocol:<5} {p.concurrency:>5} {p.batch:>5} | {p.rows_per_s:>14.1f} "
            f"{q.rows_per_s:>14.1f} {tput:>5.2f}x | {p.pct(99):>9.2f} ms {q.pct(99):>8.2f} ms "
            f"{p99:>5.2f}x"
        )
    print(f"(ratio = {a}/{b}: throughput > 1 and p99 < 1 favour {a})")


def parse_ints(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default=None, help="host:port of an endpoint to measure")
    parser.add_argument("--label", default="endpoint", help="name of --url in the table")
    parser.add_argument(
        "--stats-url", default=None, help="host:port of --url's HTTP side (batch statistics)"
    )
    parser.add_argument("--protocol", default="grpc", help="grpc, http or grpc,http")
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--input", default="input")
    parser.add_argument("--output", default="output")
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--concurrency", default="1,8,64")
    parser.add_argument("--batch", default="1,16", help="rows per client request")
    parser.add_argument("--duration", type=float, default=10.0, help="measured s per point")
    parser.add_argument("--warmup", type=float, default=2.0, help="unmeasured s per point")
    parser.add_argument("--serve-infleet", action="store_true")
    parser.add_argument("--serve-triton", action="store_true")
    parser.add_argument(
        "--serve-floor",
        action="store_true",
        help="also measure bench/grpc_floor.py (grpcio answering zeros: the floor of any "
        "grpcio server; gRPC only)",
    )
    parser.add_argument("--floor-server", choices=("aio", "sync"), default="aio")
    parser.add_argument(
        "--model-param",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="builtin mlp parameter for the servers started and the check (depth=4 default)",
    )
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--max-queue-delay-us", type=int, default=1000)
    parser.add_argument("--infleet-arg", action="append", default=[], help="extra worker flag")
    parser.add_argument(
        "--infleet-profile", type=Path, default=None, help="cProfile the worker into this file"
    )
    parser.add_argument("--start-timeout", type=float, default=180.0)
    parser.add_argument("--no-check", action="store_true", help="skip the torch check")
    parser.add_argument("--atol", type=float, default=1e-4, help="check tolerance x max|ref|")
    parser.add_argument("--log-dir", type=Path, default=None, help="server logs (default tmp)")
    return parser


async def measure(
    target: Target,
    protocol: str,
    args: argparse.Namespace,
    params: dict[str, str],
    skip_check: bool = False,
) -> list[Point]:
    if not (args.no_check or skip_check):
        err = await check_outputs(target, protocol, args, params)
        progress(f"{target.label}/{protocol}: outputs match torch (max abs err {err:.2e})")
    points = []
    for batch in parse_ints(args.batch):
        for conc in parse_ints(args.concurrency):
            progress(
                f"{target.label}/{protocol} concurrency {conc} batch {batch}: "
                f"{args.warmup:g}+{args.duration:g} s"
            )
            point = await run_point(target, protocol, args, conc, batch)
            progress(
                f"  {point.infer_per_s:.1f} infer/s, {point.rows_per_s:.1f} rows/s, "
                f"p50 {point.pct(50):.2f} ms, p99 {point.pct(99):.2f} ms, "
                f"{point.errors} errors, client {point.client_cpu:.2f} cores, "
                f"server {point.server_cpu:.2f} cores, "
                f"server batch {point.server_batch:.1f} rows in {point.batch_ms:.2f} ms"
            )
            points.append(point)
    return points


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if threading.current_thread() is threading.main_thread():  # kill -> servers stopped
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    params = {"width": str(args.width), "depth": "4", "seed": "0"}
    for kv in args.model_param:
        key, _, value = kv.partition("=")
        params[key] = value
    if params["width"] != str(args.width):
        raise SystemExit("--model-param width must equal --width")
    protocols = [p.strip() for p in args.protocol.split(",") if p.strip()]
    if not set(protocols) <= {"grpc", "http"}:
        raise SystemExit("--protocol: grpc, http or grpc,http")
    if not (args.url or args.serve_infleet or args.serve_triton or args.serve_floor):
        raise SystemExit(
            "nothing to measure: give --url, --serve-infleet, --serve-triton or --serve-floor"
        )
    if args.url and len(protocols) > 1:
        raise SystemExit("--url is one port: give one --protocol")
    log_dir = args.log_dir or Path(tempfile.mkdtemp(prefix="infleet-serving-"))
    log_dir.mkdir(parents=True, exist_ok=True)
    progress(f"model params {params}; server logs in {log_dir}")

    points: list[Point] = []
    if args.url:
        stats_url = args.url if protocols[0] == "http" else args.stats_url
        target = Target(args.label, args.url, args.model, stats_url)
        points += asyncio.run(measure(target, protocols[0], args, params))
    servers = [("infleet", serve_infleet, args.serve_infleet)]
    servers.append(("triton", serve_triton, args.serve_triton))
    servers.append(("grpc-floor", serve_floor, args.serve_floor))
    for label, serve, wanted in servers:
        if not wanted:
            continue
        with serve(args, params, log_dir) as (http, grpc, pid):
            for protocol in protocols:
                if label == "grpc-floor" and protocol != "grpc":
                    continue
                port = grpc if protocol == "grpc" else http
                stats = f"127.0.0.1:{http}" if http else None
                target = Target(label, f"127.0.0.1:{port}", args.model, stats, pid)
                checked = args.no_check or label == "grpc-floor"  # zeros by design
                points += asyncio.run(measure(target, protocol, args, params, checked))

    print()
    print(
        f"# builtin mlp {params}, server max batch {args.max_batch_size}, "
        f"queue delay {args.max_queue_delay_us} us, {args.duration:g} s per point, "
        f"{os.cpu_count()} CPUs"
    )
    print_table(points)
    print("(server, client: CPU cores used during the measured window)")
    print_comparison(points)
    print_comparison(points, "grpc-floor", "triton")
    print_comparison(points, "infleet", "grpc-floor")
    return 0


if __name__ == "__main__":
    sys.exit(main())
