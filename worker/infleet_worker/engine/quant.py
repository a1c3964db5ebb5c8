"""Quantized ``nn.Linear`` replacements, swapped in module by module (gpt-fast style).

- :class:`Int8Linear` (precision ``int8``, W8A8): int8 weights with one scale per output
  channel, activations quantized to int8 per token (row) on the fly, and an int8 x int8
  -> int32 matmul (``torch._int_mm``: int8 tensor cores on CUDA, VNNI/AMX on CPU),
  rescaled by ``scale_x * scale_w``. For speed: half the weight bytes of bf16 and twice
  the tensor-core rate.
- :class:`Fp8Linear` (precision ``fp8``): e4m3 weights with one scale per output channel,
  activations cast to e4m3 with a dynamic scale, ``torch._scaled_mm`` (fp8 tensor cores,
  compute capability >= 8.9). Row-wise activation scales where the device supports them
  (Hopper and newer, and CPU), else one scale per batch (Ada).
- :class:`Int8WeightOnlyLinear` (precision ``int8-weight-only``): int8 weights, bf16
  activations, the weight dequantized in the matmul. Saves memory; on a GPU it is slower
  than bf16 (the dequantization costs a pass over the weight each call).

A Linear whose shape the fast kernel cannot take (CUDA's ``_int_mm`` wants in/out
features that are multiples of 8, ``_scaled_mm`` multiples of 16) stays in the
activation dtype; :func:`quantize` reports how many it swapped.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

_HAS_INT8PACK = hasattr(torch, "_weight_int8pack_mm")
FP8 = getattr(torch, "float8_e4m3fn", None)
FP8_MAX = 448.0  # largest finite e4m3fn value
INT_MM_MIN_ROWS = 17  # CUDA's _int_mm wants more than 16 rows: fewer are padded


def _per_channel(weight: torch.Tensor, top: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight / scale, scale): one fp32 scale per output channel mapping |w| max to top."""
    w = weight.detach().float()
    scales = w.abs().amax(dim=1).clamp(min=1e-12) / top
    return w / scales[:, None], scales


class Int8WeightOnlyLinear(nn.Module):
    """y = (x @ dequant(W).T) * scale + b, W int8 [out, in], scale per output channel."""

    weight: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear, dtype: torch.dtype) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        scaled, scales = _per_channel(linear.weight, 127.0)
        self.register_buffer("weight", torch.round(scaled).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(dtype))
        bias = None if linear.bias is None else linear.bias.detach().to(dtype)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.device.type == "cpu" and x.dtype == torch.bfloat16 and _HAS_INT8PACK:
            # torch's fused CPU kernel: no dequantized weight copy per call
            flat = x.reshape(-1, self.in_features).contiguous()
            y = torch._weight_int8pack_mm(flat, self.weight, self.scales)
            y = y.reshape(*x.shape[:-1], self.out_features)
        else:
            y = F.linear(x, self.weight.to(x.dtype)) * self.scales
        return y if self.bias is None else y + self.bias

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


class Int8Linear(nn.Module):
    """W8A8: y = int_mm(q(x), W.T) * scale_x * scale_w + b, scale_x per row of x."""

    weight: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear, dtype: torch.dtype) -> None:
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        scaled, scales = _per_channel(linear.weight, 127.0)
        # [out, in] row-major: .t() is the column-major [in, out] operand _int_mm wants
        self.register_buffer("weight", torch.round(scaled).clamp(-127, 127).to(torch.int8))
        # fp32 like the rescaled int32 result: y = acc * s_x * s_w + b in one fp32 pass
        self.register_buffer("scales", scales)
        bias = None if linear.bias is None else linear.bias.detach().float()
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features)
        q, scale_x = quantize_rows_int8(flat)
        rows = q.shape[0]
        if q.is_cuda and rows < INT_MM_MIN_ROWS:
            q = F.pad(q, (0, 0, 0, INT_MM_MIN_ROWS - rows))
        acc = torch._int_mm(q, self.weight.t())[:rows]
        y = torch.mul(acc, scale_x)  # int32 * fp32 -> fp32, one pass
        if self.bias is not None:
            y = torch.addcmul(self.bias, y, self.scales)
        else:
            y = y.mul_(self.scales)
        return y.to(x.dtype).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, W8A8 int8"


def row_amax(x: torch.Tensor) -> torch.Tensor:
    """max |x| per row as fp32 [m, 1], one kernel."""
    return torch.linalg.vector_norm(x, ord=float("inf"), dim=1, keepdim=True, dtype=torch.float32)


def quantize_rows_int8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic symmetric per-row int8: (q int8 [m, k], scale fp32 [m, 1]), x ~ q * scale.

    Three passes over ``x`` (amax, divide, round+cast); no clamp: ``|x| / scale <= 127``
    by construction and rounding keeps it there.
    """
    scale = row_amax(x).clamp_(min=1e-12).div_(127.0)
    return torch.div(x, scale).round_().to(torch.int8), scale


class Fp8Linear(nn.Module):
    """y = scaled_mm(e4m3(x / s_x), e4m3(W / s_w).T) * s_x * s_w + b."""

    weight: torch.Tensor
    scales: torch.Tensor
    one: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear, dtype: torch.dtype, rowwise: bool) -> None:
        super().__init__()
        if FP8 is None:
            raise RuntimeError(f"torch {torch.__version__} has no float8_e4m3fn dtype")
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.rowwise = rowwise
        scaled, scales = _per_channel(linear.weight, FP8_MAX)
        self.register_buffer("weight", scaled.clamp(-FP8_MAX, FP8_MAX).to(FP8))
        # row-wise: _scaled_mm applies s_w itself ([1, out]); tensor-wise: applied after
        self.register_buffer("scales", scales[None, :] if rowwise else scales.to(dtype))
        self.register_buffer("one", torch.ones((), dtype=torch.float32))
        bias = None if linear.bias is None else linear.bias.detach().to(dtype)
        self.register_buffer("bias", bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        assert FP8 is not None
        flat = x.reshape(-1, self.in_features)
        amax = row_amax(flat) if self.rowwise else row_amax(flat.reshape(1, -1)).reshape(())
        scale_x = amax.clamp_(min=1e-12).div_(FP8_MAX)
        # the clamp matters: e4m3fn has no inf, a value past 448 would become NaN
        q = torch.div(flat, scale_x).clamp_(-FP8_MAX, FP8_MAX).to(FP8)
        if self.rowwise:
            y = torch._scaled_mm(
                q, self.weight.t(), scale_a=scale_x, scale_b=self.scales, out_dtype=x.dtype
            )
        else:
            y = torch._scaled_mm(
                q, self.weight.t(), scale_a=scale_x, scale_b=self.one, out_dtype=x.dtype
            )
            y = y * self.scales
        if self.bias is not None:
            y = y + self.bias
        return y.reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        how = "row-wise" if self.rowwise else "tensor-wise"
        return f"in_features={self.in_features}, out_features={self.out_features}, fp8 {how}"


def swappable(linear: nn.Linear, precision: str, device: torch.device) -> bool:
    """Whether the fast kernel of ``precision`` takes this Linear's shape on ``device``."""
    if device.type != "cuda" or precision == "int8-weight-only":
        return True
    multiple = 16 if precision == "fp8" else 8
    return linear.in_features % multiple == 0 and linear.out_features % multiple == 0


def quantize(
    module: nn.Module,
    precision: str,
    dtype: torch.dtype,
    device: torch.device,
    rowwise: bool = True,
) -> int:
    """Swap every nn.Linear below ``module`` in place; returns how many were swapped."""
    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            if not swappable(child, precision, device):
                continue
            new: nn.Module
            if precision == "int8":
                new = Int8Linear(child, dtype)
            elif precision == "fp8":
                new = Fp8Linear(child, dtype, rowwise)
            else:
                new = Int8WeightOnlyLinear(child, dtype)
            setattr(module, name, new)
            swapped += 1
        else:
            swapped += quantize(child, precision, dtype, device, rowwise)
    return swapped
