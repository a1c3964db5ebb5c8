"""The engine alone: samples/s per model, precision and batch size (no server, no batcher).

This is the ceiling the worker can reach for a model: the batcher and protocol only take
away from it. Each case builds the model once per precision (same path as load_engine),
warms up, then times ``engine.run`` on a fixed batch, host arrays in and out (so GPU
figures include the H2D/D2H copies). Achieved FLOP/s comes from each model's FLOP count
per item (matmuls and attention; minilm at its 16-token bucket).

``--raw`` adds the ceiling above the engine: a plain ``nn.TransformerEncoder`` of
encoder-base's shape (torch's fused fast path), fed device-resident activations, under a
CUDA graph on GPU; what the engine loses against it is ours to win back. A precision the
device refuses (fp8 without fp8 tensor cores) is reported and skipped. ``--json PATH``
writes the rows for bench/gpu_check.py.

    python bench/engine_ceiling.py                       # CPU defaults, ~1-2 min on 2 cores
    python bench/engine_ceiling.py --device cuda --precisions bf16,int8,fp8 \\
        --batch-sizes 1,8,128 --iters 50 --raw
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import time
from typing import Any

import numpy as np
import torch

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import EngineError, ModelLoadError
from infleet_worker.engine.device import available_cpus, select_device, set_cpu_threads
from infleet_worker.engine.loader import build_torch_engine
from infleet_worker.engine.precision import compute_dtype
from infleet_worker.engine.sources import load_model
from infleet_worker.tensors import Tensor

SENTENCES = [
    b"A man is eating food.",
    b"The stock market crashed today.",
    b"How do I bake sourdough bread at home?",
    b"Kubernetes schedules pods onto nodes.",
]


def make_inputs(engine: Any, batch: int, rng: np.random.Generator) -> dict[str, Tensor]:
    inputs = {}
    for info in engine.inputs:
        shape = (batch, *(1 if d == -1 else d for d in info.shape))
        if info.optional:
            continue
        if info.datatype == "BYTES":
            rows = [SENTENCES[i % len(SENTENCES)] for i in range(batch)]
            inputs[info.name] = Tensor("BYTES", np.array(rows, dtype=object).reshape(shape))
        elif info.datatype.startswith("INT"):
            inputs[info.name] = Tensor(info.datatype, rng.integers(0, 1000, shape))
        else:
            inputs[info.name] = Tensor("FP32", rng.standard_normal(shape).astype(np.float32))
    return inputs


def bench_case(
    engine: Any, batch: int, iters: int, max_seconds: float
) -> tuple[float, float] | None:
    """(median seconds per batch, samples/s), or None when the batch does not run."""
    inputs = make_inputs(engine, batch, np.random.default_rng(0))
    try:
        engine.run(inputs)  # first call at this exact shape (outside the buckets: eager)
    except EngineError as exc:
        print(f"  skipped batch {batch}: {exc}", file=sys.stderr)
        return None
    times: list[float] = []
    deadline = time.perf_counter() + max_seconds
    while len(times) < iters and (not times or time.perf_counter() < deadline):
        start = time.perf_counter()
        engine.run(inputs)
        times.append(time.perf_counter() - start)
    per_batch = statistics.median(times)
    return per_batch, batch / per_batch


def raw_encoder(params: dict[str, str], precision: str, device: torch.device) -> Any:
    """nn.TransformerEncoder of encoder-base's shape (post-LN, GELU), eval, in the dtype."""
    hidden, heads = int(params.get("hidden", 768)), int(params.get("heads", 12))
    layer = torch.nn.TransformerEncoderLayer(
        hidden,
        heads,
        int(params.get("ffn", 4 * hidden)),
        dropout=0.0,
        activation="gelu",
        batch_first=True,
    )
    model = torch.nn.TransformerEncoder(
        layer, int(params.get("layers", 12)), enable_nested_tensor=False
    )
    return model.eval().to(device, compute_dtype(precision, device))


@torch.inference_mode()
def bench_raw(
    params: dict[str, str], precision: str, batch: int, device: torch.device, iters: int
) -> tuple[float, float]:
    """(seconds per batch, samples/s) of the raw encoder on device-resident activations."""
    model = raw_encoder(params, precision, device)
    seq, hidden = int(params.get("seq", 128)), int(params.get("hidden", 768))
    x = torch.randn(batch, seq, hidden, device=device, dtype=compute_dtype(precision, device))
    step: Any = lambda: model(x)  # noqa: E731
    sync: Any = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else None
    if device.type == "cuda":
        stream = torch.cuda.Stream(device)
        with torch.cuda.stream(stream):
            for _ in range(3):
                model(x)
        stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=stream):
            model(x)
        step = graph.replay
    step()
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        step()
        if sync is not None:
            sync()
        times.append(time.perf_counter() - start)
    per_batch = statistics.median(times)
    return per_batch, batch / per_batch


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="mlp,encoder-base,minilm")
    parser.add_argument(
        "--precisions", default=None, help="default: fp32,bf16,int8,int8-weight-only (CPU)"
    )
    parser.add_argument("--batch-sizes", default=None, help="default: 1,4 (CPU), 1,8,32,128")
    parser.add_argument("--iters", type=int, default=None, help="timed runs per case")
    parser.add_argument("--max-seconds", type=float, default=None, help="time cap per case")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--no-cuda-graphs", action="store_true")
    parser.add_argument("--param", action="append", default=[], help="model:key=value")
    parser.add_argument("--raw", action="store_true", help="add the raw encoder ceiling")
    parser.add_argument("--json", default=None, help="also write the rows to this file")
    args = parser.parse_args(argv)

    device = select_device(args.device)
    gpu = device.type == "cuda"
    default_precisions = "fp32,fp16,bf16,int8,int8-weight-only,fp8" if gpu else "fp32,bf16,int8"
    precisions = (args.precisions or default_precisions).split(",")
    batches = [int(b) for b in (args.batch_sizes or ("1,8,32,128" if gpu else "1,4")).split(",")]
    iters = args.iters or (50 if gpu else 2)
    max_seconds = args.max_seconds or (10.0 if gpu else 2.0)
    extra: dict[str, dict[str, str]] = {}
    for item in args.param:
        model, _, kv = item.partition(":")
        key, _, value = kv.partition("=")
        extra.setdefault(model, {})[key] = value
    if not gpu:
        set_cpu_threads()
    where = torch.cuda.get_device_name(device) if gpu else f"CPU, {available_cpus()} threads"
    print(f"# engine ceiling on {where}, torch {torch.__version__}, iters {iters}")
    header = (
        f"{'model':<13} {'prec':<16} {'batch':>5} {'ms/batch':>9} {'samples/s':>10} {'TFLOP/s':>8}"
    )
    print(header)
    print("-" * len(header))
    rows: list[dict[str, Any]] = []

    def report(
        model: str, precision: str, batch: int, per_batch: float, rate: float, flops: float
    ) -> None:
        tflops = f"{rate * flops / 1e12:8.3f}" if flops else f"{'-':>8}"
        print(
            f"{model:<13} {precision:<16} {batch:>5} {per_batch * 1e3:>9.2f} "
            f"{rate:>10.1f} {tflops}",
            flush=True,
        )
        rows.append(
            {
                "model": model,
                "precision": precision,
                "batch": batch,
                "ms": per_batch * 1e3,
                "rows_per_s": rate,
            }
        )

    for model in args.models.split(","):
        params = extra.get(model, {})
        source = f"builtin://{model}"
        try:
            base, _ = load_model(source, params)
        except ModelLoadError as exc:
            print(f"{model:<13} load failed: {exc}")
            continue
        for precision in precisions:
            cfg = WorkerConfig.model_validate(
                {
                    "model": {"name": model, "source": source, "parameters": params},
                    "engine": {
                        "device": device.type,
                        "precision": precision,
                        "cudaGraphs": not args.no_cuda_graphs,
                        "batchBuckets": sorted(set(batches)),
                    },
                    "batching": {"maxBatchSize": max(batches)},
                }
            )
            if isinstance(base, torch.nn.Module):
                try:
                    engine = build_torch_engine(copy.deepcopy(base), cfg, device)
                except ModelLoadError as exc:
                    print(f"{model:<13} {precision:<16} skipped: {exc}", flush=True)
                    rows.append({"model": model, "precision": precision, "skipped": str(exc)})
                    continue
                engine.warmup()
            else:  # an Engine (synthetic): precision means nothing to it
                engine = base
                engine.max_batch_size = max(batches)
            view = getattr(getattr(engine, "runner", None), "view", None)
            flops = float(getattr(view, "flops_per_item", 0.0))
            for batch in batches:
                result = bench_case(engine, batch, iters, max_seconds)
                if result is not None:
                    report(model, precision, batch, *result, flops)
            engine.close()
            if not isinstance(base, torch.nn.Module):
                break
            if args.raw and model == "encoder-base" and precision in ("fp32", "fp16", "bf16"):
                for batch in batches:
                    report(
                        "raw-encoder",
                        precision,
                        batch,
                        *bench_raw(params, precision, batch, device, iters),
                        flops,
                    )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
