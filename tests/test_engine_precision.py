"""Every precision's outputs stay within the tolerances documented in docs/engine.md.

fp8 is refused on CPU at load (no fp8 tensor cores), yet torch runs ``_scaled_mm`` on
CPU: its numerics are tested here with the device check lifted, and on a GPU for real in
tests/test_engine_cuda.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from infleet_worker.config import WorkerConfig
from infleet_worker.engine import precision as precision_module
from infleet_worker.engine.base import ModelLoadError
from infleet_worker.engine.loader import load_engine
from infleet_worker.engine.precision import cast_precision, check_precision
from infleet_worker.engine.quant import (
    Fp8Linear,
    Int8Linear,
    Int8WeightOnlyLinear,
    quantize,
    quantize_rows_int8,
    swappable,
)
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
TOLERANCE = {
    "fp16": (0.999, 0.01),
    "bf16": (0.999, 0.05),
    "int8": (0.995, 0.1),
    "int8-weight-only": (0.995, 0.1),
    "fp8": (0.99, 0.2),
}
CPU = torch.device("cpu")
HAS_CPU_SCALED_MM = True
try:
    torch._scaled_mm(
        torch.zeros(2, 16).to(torch.float8_e4m3fn),
        torch.zeros(16, 16).to(torch.float8_e4m3fn).t(),
        scale_a=torch.tensor(1.0),
        scale_b=torch.tensor(1.0),
        out_dtype=torch.bfloat16,
    )
except (AttributeError, RuntimeError, NotImplementedError):
    HAS_CPU_SCALED_MM = False
needs_cpu_fp8 = pytest.mark.skipif(
    not HAS_CPU_SCALED_MM, reason=f"torch {torch.__version__} has no fp8 _scaled_mm on CPU"
)


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
def test_precision_within_documented_tolerance(
    model: str, precision: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if precision == "fp8":
        if not HAS_CPU_SCALED_MM:
            pytest.skip(f"torch {torch.__version__} has no fp8 _scaled_mm on CPU")
        monkeypatch.setattr(precision_module, "check_precision", lambda p, d: None)
    ref = run(model, "fp32")
    cos, err = compare(run(model, precision), ref)
    min_cos, max_err = TOLERANCE[precision]
    assert cos >= min_cos, f"{model} {precision}: cosine {cos}"
    assert err <= max_err, f"{model} {precision}: relative max error {err}"


def test_int8_weight_only_swaps_every_linear_and_stores_int8() -> None:
    model = nn.Sequential(nn.Linear(16, 32), nn.ReLU(), nn.Sequential(nn.Linear(32, 8)))
    x = torch.randn(5, 16)
    ref = model(x)
    assert quantize(model, "int8-weight-only", torch.float32, CPU) == 2
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


@pytest.mark.parametrize("precision", ["int8", "int8-weight-only"])
def test_int8_without_linear_layers_is_a_load_error(precision: str) -> None:
    with pytest.raises(ModelLoadError, match=rf"precision {precision}: .*no nn\.Linear"):
        cast_precision(nn.ReLU(), precision, CPU)


def test_half_casts_keep_integer_buffers() -> None:
    model = nn.Linear(4, 4)
    model.register_buffer("ids", torch.arange(4))
    cast_precision(model, "bf16", torch.device("cpu"))
    assert model.weight.dtype == torch.bfloat16 and model.ids.dtype == torch.int64


def test_int8_weight_only_cpu_fused_kernel_matches_dequantized_path() -> None:
    linear = nn.Linear(64, 48)
    q = Int8WeightOnlyLinear(linear, torch.bfloat16)
    x = torch.randn(2, 3, 64, dtype=torch.bfloat16)
    fused = q(x)  # CPU + bf16: torch._weight_int8pack_mm when this torch has it
    assert q.bias is not None
    manual = torch.nn.functional.linear(x, q.weight.to(x.dtype)) * q.scales + q.bias
    assert fused.shape == (2, 3, 48)
    torch.testing.assert_close(fused, manual, atol=0.05, rtol=0.02)


def test_w8a8_swaps_linears_and_runs_int_mm() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 128), nn.GELU(), nn.Linear(128, 32))
    x = torch.randn(3, 5, 64)  # leading dims are flattened into rows (tokens)
    ref = model(x)
    cast_precision(model, "int8", CPU)
    assert isinstance(model[0], Int8Linear) and isinstance(model[2], Int8Linear)
    assert model[0].weight.dtype == torch.int8 and model[0].scales.dtype == torch.float32
    out = model(x)
    assert out.shape == ref.shape and out.dtype == torch.float32  # fp32 activations on CPU
    assert torch.nn.functional.cosine_similarity(out, ref, dim=-1).min() > 0.999


def test_w8a8_matches_its_definition_exactly() -> None:
    """int_mm(q(x), Wq.T) * s_x * s_w + b, computed by hand in float64."""
    torch.manual_seed(1)
    linear = nn.Linear(32, 24)
    q = Int8Linear(linear, torch.float32)
    x = torch.randn(7, 32)
    xq, sx = quantize_rows_int8(x)
    assert xq.dtype == torch.int8 and sx.shape == (7, 1)
    assert ((xq.double() * sx - x).abs() <= sx / 2 + 1e-6).all()  # half a step per row
    assert q.bias is not None
    manual = (xq.double() @ q.weight.double().t()) * sx.double() * q.scales.double() + q.bias
    torch.testing.assert_close(q(x).double(), manual, atol=1e-4, rtol=1e-5)


@needs_cpu_fp8
@pytest.mark.parametrize("rowwise", [True, False])
def test_fp8_linear_within_bound_of_fp32(rowwise: bool) -> None:
    torch.manual_seed(2)
    linear = nn.Linear(256, 128)
    x = torch.randn(8, 256)
    ref = linear(x).double()
    fp8 = Fp8Linear(linear, torch.bfloat16, rowwise)
    assert fp8.weight.dtype == torch.float8_e4m3fn
    out = fp8(x.to(torch.bfloat16))
    assert out.dtype == torch.bfloat16
    cos = torch.nn.functional.cosine_similarity(out.double(), ref).min()
    err = (out.double() - ref).abs().max() / ref.abs().max()
    assert cos > 0.998 and err < 0.05, (cos, err)


def test_fp8_is_refused_on_cpu_at_load() -> None:
    cfg = WorkerConfig.model_validate(
        {
            "model": {"name": "m", "source": "builtin://mlp", "parameters": {"width": "32"}},
            "engine": {"device": "cpu", "precision": "fp8"},
        }
    )
    with pytest.raises(
        ModelLoadError, match=r"builtin://mlp: precision fp8 needs a GPU with fp8 tensor cores"
    ):
        load_engine(cfg)
    check_precision("int8", CPU)  # the others run anywhere


def test_cuda_kernels_take_only_aligned_shapes() -> None:
    cuda = torch.device("cuda")  # a device object only: nothing runs on it
    assert swappable(nn.Linear(64, 24), "int8", cuda)
    assert not swappable(nn.Linear(64, 20), "int8", cuda)
    assert not swappable(nn.Linear(64, 24), "fp8", cuda)
    assert swappable(nn.Linear(64, 20), "int8-weight-only", cuda)
    assert swappable(nn.Linear(63, 20), "int8", CPU)
    model = nn.Sequential(nn.Linear(64, 64), nn.Linear(64, 10))
    assert quantize(model, "int8", torch.bfloat16, cuda) == 1  # the 10-wide head stays
    assert isinstance(model[1], nn.Linear)
