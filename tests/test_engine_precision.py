"""fp16 / bf16 / int8 outputs stay within the tolerances documented in docs/engine.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import ModelLoadError
from infleet_worker.engine.loader import load_engine
from infleet_worker.engine.precision import Int8WeightOnlyLinear, cast_precision, quantize_int8
from infleet_worker.tensors import Tensor

RNG = np.random.default_rng(1)
SMALL_ENCODER = {"layers": "2", "hidden": "64", "heads": "4", "ffn": "128", "seq": "16"}
CASES = {
    "mlp": (
        {"width": "128", "depth": "8"},
        {"input": Tensor("FP32", RNG.standard_normal((4, 128)).astype(np.float32))},
    ),
    "encoder-base": (
        SMALL_ENCODER,
        {"input_ids": Tensor("INT64", RNG.integers(0, 30522, (4, 16)))},
    ),
}
# precision -> (min cosine similarity to fp32, max |out - fp32| / max |fp32|): docs/engine.md
TOLERANCE = {"fp16": (0.999, 0.01), "bf16": (0.999, 0.05), "int8": (0.995, 0.1)}


def run(model: str, precision: str) -> np.ndarray:
    params, inputs = CASES[model]
    cfg = WorkerConfig.model_validate(
        {
            "model": {"name": "m", "source": f"builtin://{model}", "parameters": params},
            "engine": {"device": "cpu", "precision": precision},
        }
    )
    out = next(iter(load_engine(cfg).run(inputs).values()))
    assert out.datatype == "FP32"  # precision is internal: the signature stays FP32
    return out.array.astype(np.float64)


def compare(out: np.ndarray, ref: np.ndarray) -> tuple[float, float]:
    cos = (out * ref).sum(1) / np.linalg.norm(out, axis=1) / np.linalg.norm(ref, axis=1)
    return float(cos.min()), float(np.abs(out - ref).max() / np.abs(ref).max())


@pytest.mark.parametrize("model", sorted(CASES))
@pytest.mark.parametrize("precision", sorted(TOLERANCE))
def test_precision_within_documented_tolerance(model: str, precision: str) -> None:
    ref = run(model, "fp32")
    cos, err = compare(run(model, precision), ref)
    min_cos, max_err = TOLERANCE[precision]
    assert cos >= min_cos, f"{model} {precision}: cosine {cos}"
    assert err <= max_err, f"{model} {precision}: relative max error {err}"


def test_int8_swaps_every_linear_and_stores_int8() -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Sequential(nn.Linear(32, 8)))
    x = torch.randn(5, 16)
    ref = model(x)
    assert quantize_int8(model, torch.float32) == 2
    assert isinstance(model[0], Int8WeightOnlyLinear)
    inner = model[2]
    assert isinstance(inner, nn.Sequential) and isinstance(inner[0], Int8WeightOnlyLinear)
    assert model[0].weight.dtype == torch.int8 and model[0].scales.shape == (32,)
    out = model(x)
    assert torch.nn.functional.cosine_similarity(out, ref).min() > 0.999


def test_int8_weight_roundtrip_error_is_half_a_step() -> None:
    linear = nn.Linear(64, 64)
    q = Int8WeightOnlyLinear(linear, torch.float32)
    dequant = q.weight.float() * q.scales[:, None]
    step = q.scales[:, None]
    assert ((dequant - linear.weight).abs() <= step / 2 + 1e-7).all()


def test_int8_without_linear_layers_is_a_load_error() -> None:
    with pytest.raises(ModelLoadError, match=r"no nn\.Linear"):
        cast_precision(nn.ReLU(), "int8", torch.device("cpu"))


def test_half_casts_keep_integer_buffers() -> None:
    model = nn.Linear(4, 4)
    model.register_buffer("ids", torch.arange(4))
    cast_precision(model, "bf16", torch.device("cpu"))
    assert model.weight.dtype == torch.bfloat16 and model.ids.dtype == torch.int64


def test_int8_cpu_fused_kernel_matches_dequantized_path() -> None:
    linear = nn.Linear(64, 48)
    q = Int8WeightOnlyLinear(linear, torch.bfloat16)
    x = torch.randn(2, 3, 64, dtype=torch.bfloat16)
    fused = q(x)  # CPU + bf16: torch._weight_int8pack_mm when this torch has it
    assert q.bias is not None
    manual = torch.nn.functional.linear(x, q.weight.to(x.dtype)) * q.scales + q.bias
    assert fused.shape == (2, 3, 48)
    torch.testing.assert_close(fused, manual, atol=0.05, rtol=0.02)
