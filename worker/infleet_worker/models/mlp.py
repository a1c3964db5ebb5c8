"""``builtin://mlp``: a deep wide MLP, the simplest compute-bound reference model.

Input ``input`` FP32 [width] -> output ``output`` FP32 [width]. ``depth`` Linear layers
of width x width, GELU between them (none after the last). Weights are drawn from a
fixed-seed generator at load time, scaled sqrt(2/width) (He init) so activations stay O(1).
Parameters: ``width`` (4096), ``depth`` (8), ``seed`` (0).
"""

from __future__ import annotations

import torch
from torch import nn

from infleet_worker.engine.base import FINITE, TensorInfo
from infleet_worker.models.base import SequentialStage, ServedModel, seeded_generator
from infleet_worker.models.params import check_known, int_param


class MLP(ServedModel):
    def __init__(self, width: int = 4096, depth: int = 8, seed: int = 0) -> None:
        super().__init__()
        gen = seeded_generator(seed)
        blocks: list[nn.Module] = []
        for i in range(depth):
            linear = nn.Linear(width, width, device="meta")
            linear.weight = nn.Parameter(
                torch.randn(width, width, generator=gen) * (2.0 / width) ** 0.5
            )
            linear.bias = nn.Parameter(torch.randn(width, generator=gen) * 0.01)
            blocks.append(nn.Sequential(linear, nn.GELU()) if i < depth - 1 else linear)
        self.blocks = nn.ModuleList(SequentialStage(b) for b in blocks)
        self.inputs = [TensorInfo("input", "FP32", (width,), domain=FINITE)]
        self.outputs = [TensorInfo("output", "FP32", (width,), domain=FINITE)]
        self.flops_per_item = 2.0 * width * width * depth

    def stages(self) -> list[nn.Module]:
        return list(self.blocks)


def build(params: dict[str, str]) -> MLP:
    check_known(params, {"width", "depth", "seed"}, "mlp")
    return MLP(
        width=int_param(params, "width", 4096),
        depth=int_param(params, "depth", 8),
        seed=int_param(params, "seed", 0, minimum=0),
    )
