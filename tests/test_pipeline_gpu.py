"""Pipeline stages on CUDA: streams, events, per-stage CUDA graphs. Skipped without a GPU.

With one GPU the stages share it round-robin (each keeps its own stream), which is the
same code path as one stage per GPU except that the copies between stages are no-ops.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import EngineError, TensorInfo
from infleet_worker.engine.loader import load_engine
from infleet_worker.engine.pipeline.build import build_pipeline
from infleet_worker.engine.pipeline.runner import PipelineRunner
from infleet_worker.models.served import ServedView
from infleet_worker.tensors import Tensor

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

ENCODER = {"layers": "4", "hidden": "256", "heads": "4", "vocab": "1000", "seq": "32"}


def config(n: int, micro: int, precision: str, graphs: bool) -> WorkerConfig:
    return WorkerConfig.model_validate(
        {
            "model": {"name": "m", "source": "builtin://encoder-base", "parameters": ENCODER},
            "engine": {
                "device": "cuda",
                "pipelineParallel": n,
                "microBatches": micro,
                "precision": precision,
                "cudaGraphs": graphs,
                "batchBuckets": [4, 16],
            },
            "batching": {"maxBatchSize": 16},
        }
    )


def inputs(rows: int) -> dict[str, Tensor]:
    rng = np.random.default_rng(0)
    return {"input_ids": Tensor("INT64", rng.integers(0, 1000, (rows, 32)))}


@pytest.mark.parametrize("graphs", [False, True])
@pytest.mark.parametrize(("precision", "atol"), [("fp32", 1e-4), ("bf16", 3e-2)])
def test_cuda_pipeline_matches_single_device(graphs: bool, precision: str, atol: float) -> None:
    single = load_engine(config(1, 1, precision, graphs))
    single.warmup()
    batch = inputs(11)  # pads into the 16 bucket; 3 micro-batches of 4, 4, 3
    expected = single.run(batch)["embedding"].array
    single.close()
    for n in (2, 4):
        engine = load_engine(config(n, 3, precision, graphs))
        assert isinstance(engine.runner, PipelineRunner)
        try:
            engine.warmup()
            assert (engine.runner.graph_count > 0) == graphs
            for _ in range(3):  # graphs replay; static buffers reused across batches
                got = engine.run(batch)["embedding"].array
                np.testing.assert_allclose(got, expected, rtol=0, atol=atol)
            small = engine.run(inputs(2))["embedding"].array
            np.testing.assert_allclose(small, expected[:2], rtol=0, atol=atol)
        finally:
            engine.close()


def test_cuda_stage_error_fails_only_that_batch() -> None:
    model = nn.Sequential(nn.Linear(16, 16), Boom(), nn.Linear(16, 16))
    cfg = WorkerConfig.model_validate(
        {
            "model": {"name": "m", "source": "python://x:y"},
            "engine": {"device": "cuda", "pipelineParallel": 2, "microBatches": 2},
            "batching": {"maxBatchSize": 8},
        }
    )
    sig = {"inputs": [TensorInfo("x", "FP32", (16,))], "outputs": [TensorInfo("y", "FP32", (16,))]}
    engine = build_pipeline(cfg, ServedView(model, **sig), torch.device("cuda"))
    try:
        engine.warmup()
        good = np.ones((4, 16), np.float32)
        bad = good.copy()
        bad[3, 0] = 13.0
        with pytest.raises(EngineError, match=r"pipeline stage \d of 2 .*poisoned row"):
            engine.run({"x": Tensor("FP32", bad)})
        assert engine.run({"x": Tensor("FP32", good)})["y"].array.shape == (4, 16)
    finally:
        engine.close()


class Boom(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if bool((x[:, 0] == 13.0).any()):  # a host-side failure (syncs): the device stays fine
            raise RuntimeError("poisoned row")
        return x
