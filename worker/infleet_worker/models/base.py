"""What a servable torch model looks like to the engine.

A served model is an ``nn.Module`` whose ``forward`` takes its tensors positionally (in
the order of ``inputs``) and returns a tensor, a tuple/list (in the order of ``outputs``)
or a dict keyed by output name. Everything else is optional and has a default in
:class:`ModelSpecView`, so a plain module from ``python://`` or ``file://`` works too:

- ``inputs`` / ``outputs``: the served signature (``list[TensorInfo]``, per-item shapes).
- ``prepare_inputs(host) -> tuple[torch.Tensor, ...]``: host-side preprocessing (the
  MiniLM tokenizer lives here); default = numpy -> torch, optional inputs filled in.
- ``example_inputs(batch) -> list[tuple[torch.Tensor, ...]]``: the shapes to warm up and
  capture CUDA graphs for, one tuple per variant (e.g. per sequence bucket).
- ``stages() -> list[nn.Module]``: blocks that compose to ``forward`` over a tuple state,
  for the pipeline-parallel split (a later issue).
- ``flops_per_item``: forward FLOPs per batch row, for the benchmark's TFLOP/s.
- ``row_independent``: output row i depends on input row i only (padding is safe).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from infleet_worker.engine.base import TensorInfo
from infleet_worker.tensors import Tensor

# Triton datatype <-> torch dtype (BYTES has no torch dtype: it is preprocessed on the host).
TORCH_DTYPES: dict[str, torch.dtype] = {
    "BOOL": torch.bool,
    "UINT8": torch.uint8,
    "UINT16": torch.uint16,
    "UINT32": torch.uint32,
    "UINT64": torch.uint64,
    "INT8": torch.int8,
    "INT16": torch.int16,
    "INT32": torch.int32,
    "INT64": torch.int64,
    "FP16": torch.float16,
    "FP32": torch.float32,
    "FP64": torch.float64,
    "BF16": torch.bfloat16,
}
TRITON_DATATYPES: dict[torch.dtype, str] = {v: k for k, v in TORCH_DTYPES.items()}


def concrete_shape(shape: Sequence[int], free: int = 1) -> tuple[int, ...]:
    """A per-item shape with every free (-1) dimension set to ``free``."""
    return tuple(free if d == -1 else d for d in shape)


def to_torch(tensor: Tensor) -> torch.Tensor:
    """A host tensor as a CPU torch tensor, sharing memory where numpy allows it."""
    array = tensor.array
    if tensor.datatype == "BF16":
        return torch.from_numpy(np.ascontiguousarray(array, dtype=np.uint16)).view(torch.bfloat16)
    if tensor.datatype == "BYTES":
        raise TypeError("BYTES inputs need the model's own prepare_inputs")
    if not array.flags.writeable:  # torch warns on read-only buffers; copy those only
        array = array.copy()
    return torch.from_numpy(np.ascontiguousarray(array))


def from_torch(value: torch.Tensor, info: TensorInfo) -> Tensor:
    """A CPU torch tensor as a host Tensor with the signature's datatype."""
    if info.datatype == "BF16":
        return Tensor("BF16", value.to(torch.bfloat16).view(torch.uint16).numpy())
    dtype = TORCH_DTYPES[info.datatype]
    return Tensor(info.datatype, value.to(dtype).numpy())


def zeros_input(info: TensorInfo, batch: int) -> torch.Tensor:
    """A zero tensor for one input (warm-up, or a missing optional input)."""
    return torch.zeros((batch, *concrete_shape(info.shape)), dtype=TORCH_DTYPES[info.datatype])


class ServedModel(nn.Module):
    """Base class for the builtin models: a signature plus stage blocks over a tuple state."""

    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    row_independent: bool = True
    flops_per_item: float = 0.0
    # Names of inputs the client may omit, with the value used when it does.
    optional_inputs: dict[str, int] = {}

    def stages(self) -> list[nn.Module]:
        raise NotImplementedError

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        state: tuple[torch.Tensor, ...] = inputs
        for stage in self.stages():
            state = stage(state)
        return state

    def prepare_inputs(self, host: dict[str, Tensor]) -> tuple[torch.Tensor, ...]:
        batch = next(iter(host.values())).batch
        tensors = []
        for info in self.inputs:
            if info.name in host:
                tensors.append(to_torch(host[info.name]))
            elif info.name in self.optional_inputs:
                shape = (batch, *concrete_shape(info.shape))
                fill = self.optional_inputs[info.name]
                tensors.append(torch.full(shape, fill, dtype=TORCH_DTYPES[info.datatype]))
            else:
                raise KeyError(f"missing input {info.name!r}")
        return tuple(tensors)

    def example_inputs(self, batch: int) -> list[tuple[torch.Tensor, ...]]:
        return [tuple(zeros_input(info, batch) for info in self.inputs)]


class SequentialStage(nn.Module):
    """A stage that applies ``block`` to the first element of the tuple state."""

    def __init__(self, block: nn.Module) -> None:
        super().__init__()
        self.block = block

    def forward(self, state: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        return (self.block(state[0]), *state[1:])


def seeded_generator(seed: int) -> torch.Generator:
    """The CPU generator every builtin draws its weights from (same seed, same weights)."""
    gen = torch.Generator(device="cpu")
    gen.manual_seed(seed)
    return gen
