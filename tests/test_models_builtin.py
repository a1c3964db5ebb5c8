"""Builtin reference models: signatures, dtypes, determinism, the synthetic stand-in."""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import Engine, EngineError, ModelLoadError
from infleet_worker.engine.loader import load_engine
from infleet_worker.models import BUILTIN_MODELS, builtin_factory
from infleet_worker.tensors import Tensor

SMALL = {
    "mlp": {"width": "64", "depth": "3"},
    "encoder-base": {
        "layers": "2",
        "hidden": "64",
        "heads": "4",
        "ffn": "128",
        "seq": "16",
        "vocab": "1000",
    },
}


def load(model: str, params: dict[str, str], max_batch: int = 4) -> Engine:
    return load_engine(
        WorkerConfig.model_validate(
            {
                "model": {"name": "m", "source": f"builtin://{model}", "parameters": params},
                "engine": {"device": "cpu"},
                "batching": {"maxBatchSize": max_batch},
            }
        )
    )


def weights_digest(model: str, params: dict[str, str]) -> str:
    module = builtin_factory(model)(params)
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def test_registry_lists_the_four_builtins() -> None:
    assert set(BUILTIN_MODELS) == {"mlp", "encoder-base", "minilm", "synthetic"}


def test_mlp_signature_and_output() -> None:
    engine = load("mlp", SMALL["mlp"])
    assert [(i.name, i.datatype, i.shape) for i in engine.inputs] == [("input", "FP32", (64,))]
    assert [(o.name, o.datatype, o.shape) for o in engine.outputs] == [("output", "FP32", (64,))]
    x = np.random.default_rng(0).standard_normal((3, 64)).astype(np.float32)
    out = engine.run({"input": Tensor("FP32", x)})["output"].array
    assert out.dtype == np.float32 and out.shape == (3, 64) and np.isfinite(out).all()
    single = engine.run({"input": Tensor("FP32", x[1:2])})["output"].array
    np.testing.assert_allclose(single[0], out[1], rtol=1e-5, atol=1e-6)  # row independent


def test_encoder_signature_and_optional_mask() -> None:
    engine = load("encoder-base", SMALL["encoder-base"])
    names = [(i.name, i.datatype, i.shape, i.optional) for i in engine.inputs]
    assert names == [
        ("input_ids", "INT64", (16,), False),
        ("attention_mask", "INT64", (16,), True),
    ]
    assert [(o.name, o.datatype, o.shape) for o in engine.outputs] == [("embedding", "FP32", (64,))]
    ids = np.random.default_rng(0).integers(0, 1000, (2, 16))
    no_mask = engine.run({"input_ids": Tensor("INT64", ids)})["embedding"].array
    ones = {"input_ids": Tensor("INT64", ids), "attention_mask": Tensor("INT64", np.ones_like(ids))}
    np.testing.assert_allclose(engine.run(ones)["embedding"].array, no_mask, atol=1e-6)
    mask = np.ones_like(ids)
    mask[:, 8:] = 0  # masked tokens do not count: same as the 8-token prefix padded anyhow
    masked = {"input_ids": Tensor("INT64", ids), "attention_mask": Tensor("INT64", mask)}
    other = ids.copy()
    other[:, 8:] = 7
    masked_other = {"input_ids": Tensor("INT64", other), "attention_mask": Tensor("INT64", mask)}
    np.testing.assert_allclose(
        engine.run(masked)["embedding"].array,
        engine.run(masked_other)["embedding"].array,
        atol=1e-5,
    )


def test_same_seed_same_weights_across_processes() -> None:
    here = {model: weights_digest(model, params) for model, params in SMALL.items()}
    code = (
        "from test_models_builtin import SMALL, weights_digest;"
        "print(*(weights_digest(m, p) for m, p in sorted(SMALL.items())))"
    )
    there = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
        cwd=Path(__file__).parent,  # `python -c` imports from its working directory
    ).stdout.split()
    assert there == [here[m] for m in sorted(SMALL)]
    assert weights_digest("mlp", {**SMALL["mlp"], "seed": "1"}) != here["mlp"]


def test_bad_encoder_shape_parameters() -> None:
    with pytest.raises(ModelLoadError, match=r"multiple of heads"):
        load("encoder-base", {"hidden": "30", "heads": "4"})
    with pytest.raises(ModelLoadError, match=r"seq=600 must be <= 512"):
        load("encoder-base", {"seq": "600"})


@pytest.mark.slow
def test_real_encoder_base_batch_two() -> None:
    engine = load("encoder-base", {}, max_batch=2)
    params = sum(p.numel() for p in engine.runner.module.parameters())  # type: ignore[attr-defined]
    assert 108e6 < params < 111e6  # BERT-base: ~109M parameters
    ids = np.random.default_rng(0).integers(0, 30522, (2, 128))
    out = engine.run({"input_ids": Tensor("INT64", ids)})["embedding"]
    assert out.datatype == "FP32" and out.array.shape == (2, 768)
    assert np.isfinite(out.array).all()


def test_synthetic_sleeps_and_doubles(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level("WARNING"):
        engine = load("synthetic", {"baseMs": "30", "perItemMs": "5"}, max_batch=8)
    assert "synthetic: sleeps to emulate accelerator time" in caplog.text
    assert "synthetic: sleeps to emulate accelerator time" in (engine.__doc__ or "") + (
        sys.modules[type(engine).__module__].__doc__ or ""
    )
    x = np.arange(8 * 16, dtype=np.float32).reshape(8, 16)
    start = time.perf_counter()
    out = engine.run({"input": Tensor("FP32", x)})["output"]
    elapsed = time.perf_counter() - start
    np.testing.assert_array_equal(out.array, x * 2)
    assert 0.07 <= elapsed < 2.0  # 30 ms + 8 x 5 ms, loose upper bound on a busy machine
    assert engine.name == "m" and engine.max_batch_size == 8 and engine.row_independent
    with pytest.raises(EngineError, match="FP32"):
        engine.run({"input": Tensor("FP64", x.astype(np.float64))})


def test_synthetic_sleep_releases_the_gil() -> None:
    import threading

    engine = load("synthetic", {"baseMs": "200", "perItemMs": "0"})
    ticks = 0
    done = threading.Event()

    def spin() -> None:
        nonlocal ticks
        while not done.is_set():
            ticks += 1

    thread = threading.Thread(target=spin)
    thread.start()
    engine.run({"input": Tensor("FP32", np.zeros((1, 16), np.float32))})
    done.set()
    thread.join()
    assert ticks > 1000  # the other thread ran while the batch "computed"
