"""Does the worker serve one-row requests at the speed of its engine? (issue 14's bench)

Measures, in one run: the engine alone (``engine.run`` on full ``maxBatchSize``
batches, host arrays in and out: the ceiling), then a real worker pod (supervisor,
front ends, engine core) under closed-loop load from several client processes
(bench/loadgen.py), and prints them side by side: served rows/s as a share of the
engine-alone rate, p50/p99, rows per executed batch.

On a GPU (default there): builtin encoder-base, bf16, CUDA graphs, maxBatchSize 128,
1 row per request over gRPC and HTTP at concurrency 64, 256 and 1024, and 8 rows per
request at 256. Targets: batch-1 rows/s >= 85% of the engine alone; at 1024 no lower
than at 256; p99 at 256 below 50 ms. Without a GPU the same run at CPU sizes (a small
encoder), so the command itself is tested anywhere.

    python bench/frontends.py                       # GPU if present, else CPU-sized
    python bench/frontends.py --device cpu --front-ends 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from loadgen import LoadSpec, run_load

# As the worker does (cli.main): idle OpenMP threads must not spin on the CPUs.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

GPU = {
    "source": "builtin://encoder-base",
    "params": {},
    "precision": "bf16",
    "max_batch": 128,
    "points": "grpc:1:64,grpc:1:256,grpc:1:1024,http:1:64,http:1:256,http:1:1024,grpc:8:256",
    "procs": 12,
    "duration": 8.0,
}
CPU = {
    "source": "builtin://encoder-base",
    "params": {"layers": "1", "hidden": "64", "heads": "2", "ffn": "128", "seq": "16",
               "vocab": "1000"},
    "precision": "fp32",
    "max_batch": 32,
    "points": "grpc:1:16,grpc:1:64,http:1:16,http:1:64,grpc:8:64",
    "procs": 1,
    "duration": 3.0,
}  # fmt: skip


@dataclass
class Row:
    protocol: str
    rows_per_request: int
    concurrency: int
    rows_per_s: float
    share: float  # of the engine-alone rate
    p50_ms: float
    p99_ms: float
    rows_per_batch: float
    errors: int


def progress(msg: str) -> None:
    print(f"[frontends {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def worker_config(args: argparse.Namespace, preset: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": {"name": "enc", "source": preset["source"], "parameters": preset["params"]},
        "engine": {"device": args.device, "precision": preset["precision"], "cudaGraphs": True},
        "batching": {
            "maxBatchSize": preset["max_batch"],
            "maxQueueDelayMicroseconds": args.max_queue_delay_us,
            "maxQueueSize": 100_000,
            "defaultTimeoutMicroseconds": 0,
        },
        "server": {
            "host": "127.0.0.1", "httpPort": 0, "grpcPort": 0, "metricsPort": 0,
            "drainSeconds": 0, "frontEnds": args.front_ends,
        },
    }  # fmt: skip


def engine_alone(cfg_doc: dict[str, Any], seconds: float) -> tuple[float, int]:
    """(rows/s, vocab) of engine.run on full batches, in this process (then freed)."""
    import torch

    from infleet_worker.config import WorkerConfig
    from infleet_worker.cpus import front_end_count
    from infleet_worker.engine.device import reserve_cpus
    from infleet_worker.engine.loader import load_engine
    from infleet_worker.tensors import Tensor

    cfg = WorkerConfig.model_validate(cfg_doc)
    reserve_cpus(front_end_count(cfg.server.front_ends))  # the engine core's CPU threads
    engine = load_engine(cfg)
    engine.warmup()
    batch = cfg.batching.max_batch_size
    ids = engine.inputs[0]
    vocab = int(ids.domain.max) + 1 if ids.domain and ids.domain.max is not None else 1000
    x = np.random.default_rng(0).integers(0, vocab, (batch, *ids.shape), dtype=np.int64)
    inputs = {ids.name: Tensor("INT64", x)}
    for _ in range(3):
        engine.run(inputs)
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        engine.run(inputs)
        n += 1
    rate = n * batch / (time.perf_counter() - t0)
    engine.close()
    del engine
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    return rate, vocab


def start_worker(cfg_doc: dict[str, Any], log: Path) -> tuple[subprocess.Popen[bytes], dict]:
    path = log.with_suffix(".json")
    path.write_text(json.dumps(cfg_doc))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    out = log.open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "infleet_worker.cli", "--config", str(path)],
        stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        m = re.search(r"listening http=(\d+) grpc=(\d+) metrics=(\d+)", text)
        if m and "event=ready" in text:
            return proc, dict(zip(("http", "grpc", "metrics"), map(int, m.groups()), strict=True))
        if proc.poll() is not None:
            raise SystemExit(f"the worker exited ({proc.returncode}):\n{text[-3000:]}")
        time.sleep(0.2)
    raise SystemExit("the worker did not become Ready in 600 s")


def batch_counts(http: int) -> tuple[int, int]:
    url = f"http://127.0.0.1:{http}/v2/models/enc/stats"
    doc = json.loads(urllib.request.urlopen(url, timeout=10).read())["model_stats"][0]
    return int(doc["inference_count"]), int(doc["execution_count"])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--points", help="protocol:rows:concurrency,... (default per device)")
    p.add_argument("--procs", type=int, help="client processes")
    p.add_argument("--duration", type=float, help="measured seconds per point")
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--front-ends", type=int, default=0, help="0 = the worker's default")
    p.add_argument("--max-queue-delay-us", type=int, default=2000)
    p.add_argument("--json", type=Path, help="write the rows and the engine rate here")
    args = p.parse_args(argv)
    import torch

    gpu = torch.cuda.is_available() and args.device != "cpu"
    args.device = "cuda" if gpu else "cpu"
    preset = GPU if gpu else CPU
    points = [tuple(x.split(":")) for x in (args.points or preset["points"]).split(",")]
    procs = args.procs or preset["procs"]
    duration = args.duration or preset["duration"]
    cfg = worker_config(args, preset)
    progress(
        f"engine alone: {preset['source']} {preset['precision']} on {args.device}, "
        f"batch {preset['max_batch']}"
    )
    engine_rate, vocab = engine_alone(cfg, min(5.0, duration))
    progress(f"engine alone: {engine_rate:,.0f} rows/s")
    log = Path(tempfile.mkdtemp(prefix="infleet-frontends-")) / "worker.log"
    proc, ports = start_worker(cfg, log)
    progress(f"worker Ready, log {log}")
    seq = preset["params"].get("seq")
    seq_len = int(seq) if seq else 128
    rows: list[Row] = []
    try:
        for protocol, per_req, conc in points:
            n, c = int(per_req), int(conc)
            x = np.random.default_rng(n).integers(0, vocab, (n, seq_len), dtype=np.int64)
            spec = LoadSpec(f"127.0.0.1:{ports[protocol]}", protocol, "enc",
                            {"input_ids": ("INT64", x)}, ("embedding",))  # fmt: skip
            before = batch_counts(ports["http"])
            r = run_load(spec, c, procs=procs, warmup=args.warmup, duration=duration)
            after = batch_counts(ports["http"])
            execs = after[1] - before[1]
            rate = r.per_s * n
            row = Row(protocol, n, c, rate, rate / engine_rate, r.pct(50), r.pct(99),
                      (after[0] - before[0]) / execs if execs else 0.0, r.errors)  # fmt: skip
            rows.append(row)
            progress(f"{protocol} {n} row(s) x {c}: {rate:,.0f} rows/s "
                     f"({row.share:.0%} of the engine), p99 {row.p99_ms:.1f} ms, "
                     f"{row.rows_per_batch:.1f} rows/batch, {r.errors} errors "
                     f"{r.first_error[:120]}")  # fmt: skip
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(60)
    print(f"\n# engine alone: {engine_rate:,.0f} rows/s ({preset['source']}, "
          f"{preset['precision']}, {args.device}, batch {preset['max_batch']}); "
          f"{procs} client processes, {duration:g} s per point")  # fmt: skip
    print("proto  rows/req  conc    rows/s  of engine   p50 ms   p99 ms  rows/batch  errors")
    for r_ in rows:
        print(f"{r_.protocol:5}  {r_.rows_per_request:8}  {r_.concurrency:4}  "
              f"{r_.rows_per_s:8,.0f}  {r_.share:9.0%}  {r_.p50_ms:7.1f}  {r_.p99_ms:7.1f}  "
              f"{r_.rows_per_batch:10.1f}  {r_.errors:6}")  # fmt: skip
    if args.json:
        args.json.write_text(json.dumps(
            {"engine_rows_per_s": engine_rate, "device": args.device,
             "rows": [asdict(r_) for r_ in rows]}, indent=2))  # fmt: skip
    return 0 if all(r_.errors == 0 for r_ in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
