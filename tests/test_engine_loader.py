"""load_engine: every source kind, and clear errors for every way loading fails."""

from __future__ import annotations

import numpy as np
import pytest

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import Engine, EngineError, ModelLoadError
from infleet_worker.engine.loader import load_engine
from infleet_worker.tensors import Tensor

SMALL_MLP = {"width": "32", "depth": "2"}


def config(source: str, **extra: object) -> WorkerConfig:
    model: dict[str, object] = {"name": "m", "source": source}
    model.update(extra.pop("model", {}))  # type: ignore[call-overload]
    return WorkerConfig.model_validate(
        {"model": model, "engine": {"device": "cpu", **extra}, "batching": {"maxBatchSize": 4}}
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
