"""CUDA graph path: captured buckets, padding, eager fallback, precision on GPU.

Skipped without CUDA. On a GPU machine: ``pytest -q tests/test_engine_cuda.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
import torch

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.loader import load_engine
from infleet_worker.tensors import Tensor

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

SMALL_ENCODER = {"layers": "2", "hidden": "64", "heads": "4", "ffn": "128", "seq": "16"}


def load(model: str, params: dict[str, str], device: str = "cuda", **engine: object) -> Any:
    return load_engine(
        WorkerConfig.model_validate(
            {
                "model": {"name": "m", "source": f"builtin://{model}", "parameters": params},
                "engine": {"device": device, "batchBuckets": [1, 2, 4, 8], **engine},
                "batching": {"maxBatchSize": 8},
            }
        )
    )


def test_graphs_captured_for_every_bucket_and_match_cpu() -> None:
    gpu = load("mlp", {"width": "256", "depth": "4"})
    gpu.warmup()
    graphs = gpu.runner.graphs
    assert graphs is not None and len(graphs.graphs) == 4
    cpu = load("mlp", {"width": "256", "depth": "4"}, device="cpu")
    x = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
    for n in (1, 3, 5, 8):  # 3 and 5 are padded to buckets 4 and 8, outputs sliced
        inputs = {"input": Tensor("FP32", x[:n])}
        out = gpu.run(inputs)["output"].array
        ref = cpu.run(inputs)["output"].array
        assert out.shape == (n, 256)
        np.testing.assert_allclose(out, ref, rtol=2e-2, atol=2e-2)  # TF32 matmuls on GPU


def test_replay_does_not_leak_previous_batch() -> None:
    engine = load("mlp", {"width": "64", "depth": "2"})
    engine.warmup()
    a = np.ones((4, 64), np.float32)
    b = np.full((3, 64), -1.0, np.float32)
    out_a = engine.run({"input": Tensor("FP32", a)})["output"].array
    out_b = engine.run({"input": Tensor("FP32", b)})["output"].array
    assert out_b.shape == (3, 64) and not np.allclose(out_a[:3], out_b)
    # the first result is the caller's own copy, not a view of a reused pinned buffer
    again = engine.run({"input": Tensor("FP32", a)})["output"].array
    np.testing.assert_array_equal(out_a, again)


def test_outside_buckets_runs_eager() -> None:
    engine = load_engine(
        WorkerConfig.model_validate(
            {
                "model": {"name": "m", "source": "builtin://mlp", "parameters": {"width": "64"}},
                "engine": {"device": "cuda", "batchBuckets": [1, 2]},
                "batching": {"maxBatchSize": 8},
            }
        )
    )
    engine.warmup()
    out = engine.run({"input": Tensor("FP32", np.ones((6, 64), np.float32))})["output"]
    assert out.array.shape == (6, 64)


FP8_OK = torch.cuda.is_available() and torch.cuda.get_device_capability() >= (8, 9)
# precision -> min cosine similarity to fp32 on the GPU (docs/engine.md, "Precision")
GPU_TOLERANCE = {
    "fp16": 0.995,
    "bf16": 0.995,
    "int8": 0.995,
    "int8-weight-only": 0.995,
    "fp8": 0.99,
}


@pytest.mark.parametrize("precision", sorted(GPU_TOLERANCE))
def test_encoder_precisions_on_gpu(precision: str) -> None:
    if precision == "fp8" and not FP8_OK:
        pytest.skip("fp8 needs compute capability >= 8.9 (refusal tested below)")
    ref_engine = load("encoder-base", SMALL_ENCODER)
    engine = load("encoder-base", SMALL_ENCODER, precision=precision)
    engine.warmup()
    ids = np.random.default_rng(0).integers(0, 30522, (5, 16))
    ref = ref_engine.run({"input_ids": Tensor("INT64", ids)})["embedding"].array
    out = engine.run({"input_ids": Tensor("INT64", ids)})["embedding"].array
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    assert cos.min() > GPU_TOLERANCE[precision]


@pytest.mark.parametrize("precision", ["int8", "fp8"])
def test_quantized_mlp_on_gpu_pads_small_batches_and_replays(precision: str) -> None:
    """int8 pads fewer than 17 rows for _int_mm; each bucket's graph replays the swap."""
    from infleet_worker.engine.quant import Fp8Linear, Int8Linear

    if precision == "fp8" and not FP8_OK:
        pytest.skip("fp8 needs compute capability >= 8.9")
    params = {"width": "256", "depth": "4"}
    engine = load("mlp", params, precision=precision)
    engine.warmup()
    kinds = {type(m) for m in engine.runner.module.modules()}
    assert (Int8Linear if precision == "int8" else Fp8Linear) in kinds
    assert engine.runner.graph_count == 4
    ref = load("mlp", params)
    x = np.random.default_rng(0).standard_normal((8, 256)).astype(np.float32)
    for n in (1, 3, 8):
        got = engine.run({"input": Tensor("FP32", x[:n])})["output"].array
        want = ref.run({"input": Tensor("FP32", x[:n])})["output"].array
        cos = (got * want).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(want, axis=1)
        assert got.shape == (n, 256) and cos.min() > 0.99


@pytest.mark.skipif(FP8_OK, reason="this GPU has fp8 tensor cores: nothing to refuse")
def test_fp8_refused_below_compute_capability_8_9() -> None:
    from infleet_worker.engine.base import ModelLoadError

    with pytest.raises(ModelLoadError, match=r"fp8 needs a GPU .* has compute capability"):
        load("mlp", {"width": "64"}, precision="fp8")


def test_cuda_graphs_off_is_eager() -> None:
    engine = load("mlp", {"width": "64", "depth": "2"}, cudaGraphs=False)
    engine.warmup()
    assert engine.runner.graphs is None
