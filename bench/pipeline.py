"""Benchmark of pipeline parallelism inside one worker: prints figures, passes nothing.

For each ``pipelineParallel`` in ``--stages`` it loads the model through ``load_engine``
(N = 1 is the single-device engine), warms it up, and times ``engine.run`` on one batch:
rows/s and the ratio against N = 1. For N > 1 it then runs a few batches under
``torch.profiler`` and reports the overlap fraction: of the time any stage is busy,
the share during which at least two stages are busy at once. On CUDA "busy" is a kernel
on the stage's stream (the chrome trace's per-stream rows); on CPU it is a torch op on
the stage's thread. A second figure from the runner's own task trace (host-side task
start/end per stage) cross-checks it.

    # CPU (what runs anywhere; a small encoder so a batch takes a fraction of a second)
    ~/.cache/infleet/venv/bin/python bench/pipeline.py
    # GPU target: pp2 >= 90 % of pp1 on encoder-base bf16 at batch 128, one GPU
    python bench/pipeline.py --device cuda --precision bf16 --params full \\
        --batch 128 --micro-batches 4 --stages 1,2

On one GPU both stages share its SMs, so the best pp2 can do is match pp1 (the overlap
hides the fill/drain bubble and the per-micro-batch launch cost); across GPUs pp2 adds
a second device's compute.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from typing import Any

import numpy as np
import torch

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import Engine
from infleet_worker.engine.loader import load_engine
from infleet_worker.engine.pipeline.runner import PipelineRunner
from infleet_worker.engine.torch_engine import TorchEngine
from infleet_worker.tensors import Tensor

SMALL_ENCODER = "layers=4,hidden=256,heads=4,ffn=1024,seq=64"


def parse_params(text: str) -> dict[str, str]:
    if text in ("", "full"):
        return {}
    return dict(item.split("=", 1) for item in text.split(",") if item)


def make_batch(engine: Engine, rows: int) -> dict[str, Tensor]:
    rng = np.random.default_rng(0)
    batch: dict[str, Tensor] = {}
    for info in engine.inputs:
        if info.optional:
            continue
        shape = (rows, *(d if d > 0 else 16 for d in info.shape))
        if info.datatype == "BYTES":
            text = b"pipeline stages keep every device busy while the batch flows through"
            batch[info.name] = Tensor("BYTES", np.full(shape, text, dtype=object))
        elif info.datatype.startswith("INT"):
            batch[info.name] = Tensor(info.datatype, rng.integers(0, 1000, shape))  # type: ignore[arg-type]
        else:
            batch[info.name] = Tensor("FP32", rng.standard_normal(shape).astype(np.float32))
    return batch


def build(args: argparse.Namespace, stages: int) -> Engine:
    cfg = WorkerConfig.model_validate(
        {
            "model": {"name": "bench", "source": f"builtin://{args.model}", "parameters": args.p},
            "engine": {
                "device": args.device,
                "precision": args.precision,
                "pipelineParallel": stages,
                "microBatches": args.micro_batches,
                "cudaGraphs": args.cuda_graphs,
                "batchBuckets": [args.batch],
            },
            "batching": {"maxBatchSize": args.batch},
        }
    )
    engine = load_engine(cfg)
    engine.warmup()
    return engine


def time_runs(engine: Engine, batch: dict[str, Tensor], iters: int) -> list[float]:
    engine.run(batch)
    seconds = []
    for _ in range(iters):
        start = time.perf_counter()
        engine.run(batch)
        seconds.append(time.perf_counter() - start)
    return seconds


def busy_fraction(intervals: dict[Any, list[tuple[float, float]]]) -> tuple[float, float]:
    """(overlap fraction, busy seconds): time with >= 2 groups busy / time with >= 1."""
    edges: list[tuple[float, int]] = []
    for spans in intervals.values():
        for start, end in merge(spans):
            edges += [(start, 1), (end, -1)]
    edges.sort()
    active, last, any_busy, two_busy = 0, 0.0, 0.0, 0.0
    for t, delta in edges:
        if active >= 1:
            any_busy += t - last
        if active >= 2:
            two_busy += t - last
        active += delta
        last = t
    return (two_busy / any_busy if any_busy else 0.0), any_busy


def merge(spans: list[tuple[float, float]]) -> list[tuple[float, float]]:
    """Union of (possibly nested) intervals of one group."""
    merged: list[tuple[float, float]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def profiled_overlap(engine: TorchEngine, batch: dict[str, Tensor], iters: int) -> float:
    """Overlap fraction between stages from a torch.profiler chrome trace."""
    cuda = engine.runner.device.type == "cuda"
    activities = [torch.profiler.ProfilerActivity.CPU]
    if cuda:
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    try:  # stage threads are not the profiler's: ask for every thread (torch >= 2.6)
        config = torch._C._profiler._ExperimentalConfig(profile_all_threads=True)
    except TypeError:
        config = None
    with torch.profiler.profile(activities=activities, experimental_config=config) as prof:
        for _ in range(iters):
            engine.run(batch)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "trace.json")
        prof.export_chrome_trace(path)
        with open(path) as f:
            events = json.load(f)["traceEvents"]
    groups: dict[Any, list[tuple[float, float]]] = {}
    if cuda:  # kernels, one row per (GPU, stream): each stage owns a stream
        for ev in events:
            if ev.get("ph") == "X" and ev.get("cat") == "kernel":
                key = (ev.get("pid"), ev.get("tid"))
                groups.setdefault(key, []).append((ev["ts"], ev["ts"] + ev["dur"]))
    else:  # torch ops on each stage's thread
        tids = {s.thread.native_id for s in engine.runner.stages}
        for ev in events:
            if ev.get("ph") == "X" and ev.get("cat") == "cpu_op" and ev.get("tid") in tids:
                groups.setdefault(ev["tid"], []).append((ev["ts"], ev["ts"] + ev["dur"]))
    return busy_fraction(groups)[0]


def task_overlap(engine: TorchEngine, batch: dict[str, Tensor], iters: int) -> float:
    """Overlap fraction from the runner's own host-side task trace."""
    trace: list[tuple[int, int, float, float]] = []
    runner = engine.runner
    runner.trace = trace
    for stage in runner.stages:
        stage.trace = trace
    for _ in range(iters):
        engine.run(batch)
    for stage in runner.stages:
        stage.trace = None
    runner.trace = None
    groups: dict[Any, list[tuple[float, float]]] = {}
    for _, j, start, end in trace:
        groups.setdefault(j, []).append((start, end))
    return busy_fraction(groups)[0]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--model", default="encoder-base", help="builtin model name")
    parser.add_argument(
        "--params",
        default=None,
        help=f"k=v,... model parameters, or 'full' (default: full on CUDA, "
        f"{SMALL_ENCODER} for encoder-base on CPU)",
    )
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--precision", default=None, help="default: bf16 on CUDA, fp32 on CPU")
    parser.add_argument("--batch", type=int, default=None, help="default: 128 CUDA, 32 CPU")
    parser.add_argument("--micro-batches", type=int, default=4)
    parser.add_argument("--stages", default="1,2,4")
    parser.add_argument("--iters", type=int, default=None, help="timed runs per setting")
    parser.add_argument("--no-cuda-graphs", dest="cuda_graphs", action="store_false")
    parser.add_argument(
        "--no-overlap",
        dest="overlap",
        action="store_false",
        help="skip the profiler/trace overlap figures (faster)",
    )
    parser.add_argument("--json", default=None, help="also write {stages: rows/s} here")
    args = parser.parse_args(argv)

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    if args.params is None:
        args.params = "full" if cuda or args.model != "encoder-base" else SMALL_ENCODER
    args.p = parse_params(args.params)
    args.precision = args.precision or ("bf16" if cuda else "fp32")
    args.batch = args.batch or (128 if cuda else 32)
    iters = args.iters or (30 if cuda else 5)
    where = torch.cuda.get_device_name(0) if cuda else f"CPU, {os.cpu_count()} cores"
    gpus = torch.cuda.device_count() if cuda else 0
    print(
        f"pipeline bench: {args.model} ({args.params}) {args.precision}, batch {args.batch}, "
        f"{args.micro_batches} micro-batches, on {where}"
        + (f" x{gpus} (stages round-robin over them)" if cuda else "")
    )
    print(f"torch {torch.__version__}, python {sys.version.split()[0]}")

    results: dict[int, float] = {}
    for stages in (int(s) for s in args.stages.split(",")):
        engine = build(args, stages)
        batch = make_batch(engine, args.batch)
        seconds = time_runs(engine, batch, iters)
        median = statistics.median(seconds)
        results[stages] = args.batch / median
        line = (
            f"  pp{stages}: {results[stages]:9.1f} rows/s  (median {median * 1e3:8.2f} ms "
            f"over {iters} batches)"
        )
        if 1 in results and stages != 1:
            line += f"  ratio vs pp1 {results[stages] / results[1]:.3f}"
        pipelined = isinstance(engine, TorchEngine) and isinstance(engine.runner, PipelineRunner)
        if pipelined and args.overlap:
            runs = max(2, iters // 3)
            line += (
                f"  overlap: profiler {profiled_overlap(engine, batch, runs):.2f}, "
                f"tasks {task_overlap(engine, batch, runs):.2f}"
            )
        print(line, flush=True)
        if stages == 1 and not cuda and args.overlap and torch.get_num_threads() > 1:
            # Each CPU stage gets cores / N threads; pp1 with one thread is the per-core view.
            threads = torch.get_num_threads()
            torch.set_num_threads(1)
            single = args.batch / statistics.median(time_runs(engine, batch, iters))
            torch.set_num_threads(threads)
            print(f"  pp1 with 1 intra-op thread: {single:9.1f} rows/s")
        engine.close()
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": where, "rows_per_s": results}, f)


if __name__ == "__main__":
    main()
