"""Precision: what ``engine.precision`` does to a model, and where each one may run.

- ``fp32``: as loaded. ``fp16`` / ``bf16``: weights and activations cast.
- ``int8``: W8A8, every ``nn.Linear`` swapped for :class:`~.quant.Int8Linear` (int8
  weights, dynamic per-token int8 activations, int8 tensor-core matmuls); activations
  between the matmuls in bf16 on CUDA, fp32 on CPU (where bf16 elementwise is slow).
- ``int8-weight-only``: :class:`~.quant.Int8WeightOnlyLinear` (int8 weights, bf16
  activations), the memory-saving choice.
- ``fp8``: :class:`~.quant.Fp8Linear` (e4m3 weights and activations, fp8 tensor cores),
  bf16 between the matmuls. Only on GPUs with compute capability >= 8.9; anywhere else it
  is refused at load (:func:`check_precision`).

Embeddings, norms and biases stay in the activation dtype. The accuracy each one keeps
against fp32 is documented in docs/engine.md and held by tests/test_engine_precision.py.
"""

from __future__ import annotations

import contextlib
import logging

import torch
from torch import nn

from infleet_worker.engine.base import ModelLoadError
from infleet_worker.engine.quant import FP8, Fp8Linear, Int8Linear, quantize

log = logging.getLogger(__name__)

QUANTIZED = ("int8", "int8-weight-only", "fp8")
FP8_CAPABILITY = (8, 9)  # Ada; row-wise scales from (9, 0), Hopper
ROWWISE_CAPABILITY = (9, 0)


def compute_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The activation dtype a precision runs in on a device."""
    if precision == "fp16":
        return torch.float16
    if precision in ("bf16", "int8-weight-only", "fp8"):
        return torch.bfloat16
    if precision == "int8":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return torch.float32


def check_precision(precision: str, device: torch.device) -> None:
    """Refuse a precision the device cannot run, with words a user can act on."""
    if precision != "fp8":
        return
    if FP8 is None or not hasattr(torch, "_scaled_mm"):
        raise ModelLoadError(
            f"precision fp8 needs torch with float8 support; torch {torch.__version__} has "
            "none (use bf16 or int8)"
        )
    if device.type != "cuda":
        raise ModelLoadError(
            f"precision fp8 needs a GPU with fp8 tensor cores (compute capability >= 8.9: "
            f"Ada, Hopper or newer); this worker runs on {device.type} (use bf16 or int8)"
        )
    capability = torch.cuda.get_device_capability(device)
    if capability < FP8_CAPABILITY:
        name = torch.cuda.get_device_name(device)
        raise ModelLoadError(
            f"precision fp8 needs a GPU with fp8 tensor cores (compute capability >= 8.9: "
            f"Ada, Hopper or newer); {device} ({name}) has compute capability "
            f"{capability[0]}.{capability[1]} (use bf16 or int8)"
        )


def rowwise_fp8(device: torch.device) -> bool:
    """Per-token fp8 activation scales (Hopper+ and CPU), else one scale per batch."""
    if device.type != "cuda":
        return True
    return torch.cuda.get_device_capability(device) >= ROWWISE_CAPABILITY


def cast_precision(model: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """Cast (or quantize) ``model`` for ``precision`` and move it to ``device``."""
    check_precision(precision, device)
    dtype = compute_dtype(precision, device)
    with contextlib.suppress(NotImplementedError):  # torch.export modules: no eval()
        model.eval()
    if precision in QUANTIZED:
        if isinstance(model, torch.jit.ScriptModule):
            raise ModelLoadError(
                f"precision {precision} needs an nn.Module; TorchScript cannot be swapped"
            )
        swapped = quantize(model, precision, dtype, device, rowwise_fp8(device))
        if swapped == 0:
            raise ModelLoadError(
                f"precision {precision}: the model has no nn.Linear layers to quantize"
            )
        log.info("%s: quantized %d Linear layers", precision, swapped)
    if dtype != torch.float32:
        if isinstance(model, torch.jit.ScriptModule):
            model.to(dtype)
        else:
            _cast_floating(model, dtype)
    return model.to(device)


def _cast_floating(model: nn.Module, dtype: torch.dtype) -> None:
    """Cast floating parameters and buffers, leaving quantized weights and their scales."""
    for module in model.modules():
        for key, param in list(module._parameters.items()):
            if param is not None and param.is_floating_point():
                module._parameters[key] = nn.Parameter(param.detach().to(dtype), False)
        for key, buf in list(module._buffers.items()):
            if buf is None or not buf.is_floating_point() or _keeps_dtype(module, key, buf):
                continue
            module._buffers[key] = buf.to(dtype)


def _keeps_dtype(module: nn.Module, key: str, buf: torch.Tensor) -> bool:
    """fp8 weights, and the fp32 scales the int8/fp8 matmuls rescale with."""
    if FP8 is not None and buf.dtype == FP8:
        return True
    return isinstance(module, Int8Linear | Fp8Linear) and key in ("scales", "one", "bias")
