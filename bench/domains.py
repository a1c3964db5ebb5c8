"""Cost of the value-domain checks per request, next to the model's time per row.

``check_inputs`` runs once per request in the service (before batching). This times it
on encoder-base shaped requests (``input_ids`` + ``attention_mask`` INT64 [seq], ids in
[0, vocab), mask {0, 1}) at a few request batch sizes, plus ``nonfinite_rows`` on the
[batch, hidden] FP32 output, and the builtin encoder-base's own time per row on this
machine's CPU (same weights and path as ``load_engine``), so the overhead reads as a
share of the serving cost.

    PYTHONPATH=worker python bench/domains.py                    # ~30-60 s on 2 busy cores
    PYTHONPATH=worker python bench/domains.py --layers 2 --model-batch 4   # quicker
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import numpy as np

from infleet_worker.config import WorkerConfig
from infleet_worker.domains import check_inputs, nonfinite_rows
from infleet_worker.engine.base import FINITE, Engine, TensorInfo
from infleet_worker.engine.loader import load_engine
from infleet_worker.tensors import Tensor


def best_us(fn: Callable[[], object], repeat: int, number: int) -> float:
    """Best-of-``repeat`` mean over ``number`` calls, in microseconds (noisy shared CPUs)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(number):
            fn()
        best = min(best, (time.perf_counter() - t0) / number)
    return best * 1e6


def encoder(layers: int, seq: int, max_batch: int) -> Engine:
    cfg = WorkerConfig.model_validate(
        {
            "model": {
                "name": "encoder-base",
                "source": "builtin://encoder-base",
                "parameters": {"layers": str(layers), "seq": str(seq)},
            },
            "engine": {"device": "cpu", "cudaGraphs": False, "warmup": False},
            "batching": {"maxBatchSize": max_batch},
        }
    )
    return load_engine(cfg)


def request(engine: Engine, batch: int, rng: np.random.Generator) -> dict[str, Tensor]:
    ids, mask = engine.inputs
    assert ids.domain is not None and ids.domain.max is not None
    seq = ids.shape[0]
    vocab = int(ids.domain.max) + 1
    valid = np.ones((batch, seq), np.int64)
    valid[:, seq // 2 :] = 0  # half padding, as short sentences are
    return {
        ids.name: Tensor("INT64", rng.integers(0, vocab, (batch, seq), dtype=np.int64)),
        mask.name: Tensor("INT64", valid),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=12, help="encoder-base layers (12 = base)")
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batches", default="1,16", help="request batch sizes to time")
    parser.add_argument("--model-batch", type=int, default=8, help="batch for the model time")
    parser.add_argument("--model-iters", type=int, default=3)
    parser.add_argument(
        "--served-rps",
        type=float,
        default=1714.0,
        help="requests/s the serving bench measured (bench/README.md: infleet gRPC batch 1, "
        "the most requests per row)",
    )
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",")]
    rng = np.random.default_rng(0)

    engine = encoder(args.layers, args.seq, max(args.model_batch, *batches))
    infos = {i.name: i for i in engine.inputs}
    out_infos = {o.name: o for o in engine.outputs}
    hidden = engine.outputs[0].shape[0]

    sample = request(engine, args.model_batch, rng)
    engine.run(sample)  # warm-up (thread pools, allocator)
    t0 = time.perf_counter()
    for _ in range(args.model_iters):
        engine.run(sample)
    model_row_us = (time.perf_counter() - t0) / args.model_iters / args.model_batch * 1e6
    print(
        f"encoder-base layers={args.layers} seq={args.seq} on CPU: model "
        f"{model_row_us:,.0f} us per row (batch {args.model_batch})"
    )
    print(f"{'batch':>5} {'check_inputs us':>16} {'nonfinite_rows us':>18} {'of model time':>14}")
    for batch in batches:
        req = request(engine, batch, rng)
        out = {"embedding": Tensor("FP32", rng.standard_normal((batch, hidden), np.float32))}
        check_us = best_us(lambda r=req: check_inputs(r, infos), repeat=5, number=2000)
        rows_us = best_us(lambda o=out: nonfinite_rows(o, out_infos), repeat=5, number=2000)
        share = (check_us + rows_us) / (model_row_us * batch)
        print(f"{batch:>5} {check_us:>16.1f} {rows_us:>18.1f} {share:>13.4%}")

    # The serving bench's model (bench/serving.py --serve-infleet: builtin mlp width 256,
    # FP32 input and output declared finite): the check next to a served request's time.
    served_us = 1e6 / args.served_rps
    print(
        f"mlp width=256 (bench/serving.py): a served request takes {served_us:,.0f} us "
        f"at {args.served_rps:,.0f} req/s"
    )
    print(f"{'batch':>5} {'check_inputs us':>16} {'nonfinite_rows us':>18} {'of request':>14}")
    finite = {"input": TensorInfo("input", "FP32", (256,), domain=FINITE)}
    finite_out = {"output": TensorInfo("output", "FP32", (256,), domain=FINITE)}
    for batch in batches:
        x = {"input": Tensor("FP32", rng.standard_normal((batch, 256), np.float32))}
        y = {"output": x["input"]}
        check_us = best_us(lambda r=x: check_inputs(r, finite), repeat=5, number=2000)
        rows_us = best_us(lambda o=y: nonfinite_rows(o, finite_out), repeat=5, number=2000)
        share = (check_us + rows_us) / served_us
        print(f"{batch:>5} {check_us:>16.1f} {rows_us:>18.1f} {share:>13.2%}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
