"""ServedView: one shape for every torch model the engine serves.

Builtins subclass :class:`ServedModel`; ``python://`` modules may declare the same
attributes; ``file://`` modules carry none. The view reads what the module declares and
falls back to defaults, and a config signature (``model.inputs/outputs``) overrides the
module's own declaration.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from infleet_worker.engine.base import Domain, TensorInfo
from infleet_worker.models.base import ServedModel, concrete_shape, to_torch, zeros_input
from infleet_worker.tensors import Tensor


def as_tensor_infos(value: Any) -> list[TensorInfo]:
    """TensorInfo from TensorInfo, pydantic TensorSpec or plain (camelCase wire) dicts."""
    infos = []
    for item in value:
        if isinstance(item, TensorInfo):
            infos.append(item)
            continue
        if not isinstance(item, dict):  # a TensorSpec
            item = item.to_wire()
        wire = item.get("domain")
        domain = Domain.from_wire(wire) if wire else None
        shape = tuple(item.get("shape", ()))
        infos.append(TensorInfo(item["name"], item["datatype"], shape, domain=domain))
    return infos


class ServedView:
    def __init__(
        self,
        module: nn.Module,
        inputs: list[TensorInfo] | None = None,
        outputs: list[TensorInfo] | None = None,
    ) -> None:
        self.module = module
        declared_in = getattr(module, "inputs", None)
        declared_out = getattr(module, "outputs", None)
        self.inputs = inputs or (as_tensor_infos(declared_in) if declared_in else [])
        self.outputs = outputs or (as_tensor_infos(declared_out) if declared_out else [])
        if not self.inputs or not self.outputs:
            raise ValueError(
                "the model declares no signature: set model.inputs and model.outputs in the "
                "config (or give the module `inputs`/`outputs` lists of TensorInfo)"
            )
        self.row_independent: bool = bool(getattr(module, "row_independent", True))
        self.flops_per_item: float = float(getattr(module, "flops_per_item", 0.0))
        self._prepare: Callable[[dict[str, Tensor]], tuple[torch.Tensor, ...]] | None = getattr(
            module, "prepare_inputs", None
        )
        self._examples: Callable[[int], list[tuple[torch.Tensor, ...]]] | None = getattr(
            module, "example_inputs", None
        )
        # A config override of a builtin's signature keeps the builtin's preprocessing only
        # when the names are unchanged; otherwise inputs are passed through as they come.
        if inputs and isinstance(module, ServedModel) and inputs != module.inputs:
            self._prepare = self._examples = None

    def prepare_inputs(self, host: dict[str, Tensor]) -> tuple[torch.Tensor, ...]:
        if self._prepare is not None:
            return self._prepare(host)
        return tuple(to_torch(host[info.name]) for info in self.inputs)

    def example_inputs(self, batch: int) -> list[tuple[torch.Tensor, ...]]:
        if self._examples is not None:
            return self._examples(batch)
        return [tuple(zeros_input(info, batch) for info in self.inputs)]

    def stages(self) -> list[nn.Module]:
        stages = getattr(self.module, "stages", None)
        return list(stages()) if callable(stages) else [self.module]

    def describe(self) -> str:
        sig = ", ".join(f"{i.name}:{i.datatype}{list(i.shape)}" for i in self.inputs)
        out = ", ".join(f"{o.name}:{o.datatype}{list(o.shape)}" for o in self.outputs)
        return f"({sig}) -> ({out})"


__all__ = ["ServedView", "as_tensor_infos", "concrete_shape"]
