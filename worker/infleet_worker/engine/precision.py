"""Precision: fp16/bf16 weight+activation casts and int8 weight-only quantization.

int8 is a gpt-fast style module swap: every ``nn.Linear`` becomes an
:class:`Int8WeightOnlyLinear` holding int8 weights and one scale per output channel,
run with bf16 activations: on CPU through torch's fused ``_weight_int8pack_mm`` kernel,
elsewhere dequantized on the fly (``F.linear(x, W.to(bf16)) * scale``). It works on any
device torch does; embeddings, norms and biases stay in the activation dtype.
"""

from __future__ import annotations

import contextlib
import logging

import torch
import torch.nn.functional as F
from torch import nn

from infleet_worker.engine.base import ModelLoadError

log = logging.getLogger(__name__)

_HAS_INT8PACK = hasattr(torch, "_weight_int8pack_mm")


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The activation dtype a precision runs in on a device."""
    if precision == "fp16":
        return torch.float16
    if precision == "bf16":
        return torch.bfloat16
    if precision == "int8":  # gpt-fast style: int8 weights, bf16 activations
        return torch.bfloat16
    return torch.float32


class Int8WeightOnlyLinear(nn.Module):
    """y = (x @ dequant(W).T) * scale + b, W int8 [out, in], scale per output channel."""

    weight: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear, dtype: torch.dtype) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        weight = linear.weight.detach().float()
        scales = weight.abs().amax(dim=1).clamp(min=1e-8) / 127.0
        q = torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8)
        self.register_buffer("weight", q)
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
        return f"in_features={self.in_features}, out_features={self.out_features}, int8"


def quantize_int8(module: nn.Module, dtype: torch.dtype) -> int:
    """Swap every nn.Linear below ``module`` in place; returns how many were swapped."""
    swapped = 0
    for name, child in list(module.named_children()):
        if isinstance(child, nn.Linear):
            setattr(module, name, Int8WeightOnlyLinear(child, dtype))
            swapped += 1
        else:
            swapped += quantize_int8(child, dtype)
    return swapped


def cast_precision(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """Cast (or quantize) ``model`` for ``precision`` and move it to ``device``."""
    dtype = compute_dtype(precision, device)
    with contextlib.suppress(NotImplementedError):  # torch.export modules: no eval()
        model.eval()
    if precision == "int8":
        if isinstance(model, torch.jit.ScriptModule):
            raise ModelLoadError("precision int8 needs an nn.Module; TorchScript cannot be swapped")
        swapped = quantize_int8(model, dtype)
        if swapped == 0:
            raise ModelLoadError("precision int8: the model has no nn.Linear layers to quantize")
        log.info("int8 weight-only: quantized %d Linear layers", swapped)
    if dtype != torch.float32:
        if isinstance(model, torch.jit.ScriptModule):
            model.to(dtype)
        else:
            _cast_floating(model, dtype)
    return model.to(device)


def _cast_floating(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast floating parameters and buffers, leaving int8 weights and integer buffers."""
    for module in model.modules():
        for key, param in list(module._parameters.items()):
            if param is not None and param.is_floating_point():
                module._parameters[key] = nn.Parameter(param.detach().to(dtype), False)
        for key, buf in list(module._buffers.items()):
            if buf is not None and buf.is_floating_point():
                module._buffers[key] = buf.to(dtype)
