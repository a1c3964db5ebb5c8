"""load_engine: every source kind, and clear errors for every way loading fails."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import Engine, EngineError, ModelLoadError, TensorInfo
from infleet_worker.engine.loader import load_engine
from infleet_worker.tensors import Tensor

SMALL_MLP = {"width": "32", "depth": "2"}


def config(source: str, model: dict[str, object] | None = None, **engine: object) -> WorkerConfig:
    spec = {"name": "m", "source": source, **(model or {})}
    return WorkerConfig.model_validate(
        {"model": spec, "engine": {"device": "cpu", **engine}, "batching": {"maxBatchSize": 4}}
    )


def fp32(*shape: int) -> Tensor:
    return Tensor("FP32", np.random.default_rng(0).standard_normal(shape).astype(np.float32))


def test_builtin_mlp_serves_on_cpu() -> None:
    engine = load_engine(config("builtin://mlp", model={"parameters": SMALL_MLP}))
    assert isinstance(engine, Engine)
    engine.warmup()
    assert [i.name for i in engine.inputs] == ["input"]
    assert engine.max_batch_size == 4 and engine.row_independent
    out = engine.run({"input": fp32(3, 32)})["output"]
    assert out.datatype == "FP32" and out.array.shape == (3, 32)
    assert np.isfinite(out.array).all()
    engine.close()


def test_unknown_builtin_names_the_alternatives() -> None:
    with pytest.raises(ModelLoadError, match=r"builtin://nope.*builtins: encoder-base"):
        load_engine(config("builtin://nope"))


def test_bad_parameter_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match=r"builtin://mlp.*width='wide' is not an integer"):
        load_engine(config("builtin://mlp", model={"parameters": {"width": "wide"}}))
    with pytest.raises(ModelLoadError, match="unknown parameter"):
        load_engine(config("builtin://mlp", model={"parameters": {"widht": "8"}}))


def test_run_rejects_bad_inputs_with_engine_error() -> None:
    engine = load_engine(config("builtin://mlp", model={"parameters": SMALL_MLP}))
    with pytest.raises(EngineError, match="no inputs"):
        engine.run({})
    with pytest.raises(EngineError, match="unknown input"):
        engine.run({"input": fp32(1, 32), "x": fp32(1, 32)})
    with pytest.raises(EngineError, match="per-item shape"):
        engine.run({"input": fp32(1, 31)})
    with pytest.raises(EngineError, match="is FP64, expected FP32"):
        engine.run({"input": Tensor("FP64", np.zeros((1, 32)))})


def test_config_signature_overrides_the_model_declaration() -> None:
    override: dict[str, object] = {
        "parameters": SMALL_MLP,
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [32]}],
        "outputs": [{"name": "scores", "datatype": "FP32", "shape": [32]}],
    }
    engine = load_engine(config("builtin://mlp", model=override))
    assert [i.name for i in engine.inputs] == ["features"]
    out = engine.run({"features": fp32(2, 32)})
    assert out["scores"].array.shape == (2, 32)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cuda_requested_without_gpu_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match="no CUDA device is visible"):
        load_engine(config("builtin://mlp", device="cuda", model={"parameters": SMALL_MLP}))


def test_cpu_threads_follow_available_cores() -> None:
    from infleet_worker.engine.device import available_cpus, set_cpu_threads

    assert set_cpu_threads() == available_cpus() == torch.get_num_threads() >= 1


def test_fp64_inputs_are_not_downcast_in_fp32() -> None:
    class Identity(nn.Module):
        inputs = [TensorInfo("x", "FP64", (2,))]
        outputs = [TensorInfo("y", "FP64", (2,))]

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 1

    from infleet_worker.engine.loader import build_torch_engine

    cfg = WorkerConfig.model_validate({"model": {"name": "m", "source": "python://x:y"}})
    engine = build_torch_engine(Identity(), cfg, torch.device("cpu"))
    value = np.array([[1.0 + 1e-12, 2.0]])
    out = engine.run({"x": Tensor("FP64", value)})["y"]
    assert out.datatype == "FP64" and out.array[0, 0] == value[0, 0]
