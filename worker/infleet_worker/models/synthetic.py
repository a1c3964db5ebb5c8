"""``builtin://synthetic``: a labelled stand-in for an accelerator on a small CPU machine.

synthetic: sleeps to emulate accelerator time. A batch of n rows takes
``baseMs + perItemMs * n`` milliseconds of wall time spent in ``time.sleep`` (which
releases the GIL, so the process stays responsive and several replicas on one machine
each add capacity), and returns ``output = input * 2`` (FP32 [width] -> FP32 [width]).
It is not a model and computes nothing worth measuring: it lets the demo and the e2e
tests show capacity growing with replicas on a 2-core machine.

Parameters: ``baseMs`` (20), ``perItemMs`` (1), ``width`` (16).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from infleet_worker.engine.base import FINITE, EngineError, TensorInfo
from infleet_worker.models.params import check_known, float_param, int_param
from infleet_worker.tensors import Tensor

log = logging.getLogger(__name__)


class SyntheticEngine:
    """Implements the Engine protocol directly: there is no torch module behind it."""

    row_independent = True

    def __init__(self, base_ms: float = 20.0, per_item_ms: float = 1.0, width: int = 16) -> None:
        self.name = "synthetic"
        self.version = "1"
        self.max_batch_size = 0  # the loader sets it from batching.maxBatchSize
        self.base_ms = base_ms
        self.per_item_ms = per_item_ms
        self.inputs = [TensorInfo("input", "FP32", (width,), domain=FINITE)]
        self.outputs = [TensorInfo("output", "FP32", (width,), domain=FINITE)]
        log.warning(
            "synthetic: sleeps to emulate accelerator time (%.1f ms + %.2f ms/item); "
            "outputs are input * 2, not a real model",
            base_ms,
            per_item_ms,
        )

    def batch_seconds(self, n: int) -> float:
        return (self.base_ms + self.per_item_ms * n) / 1000.0

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        tensor = inputs.get("input")
        if tensor is None or set(inputs) != {"input"}:
            raise EngineError(f"synthetic: expects exactly one input 'input', got {sorted(inputs)}")
        if tensor.datatype != "FP32" or tensor.array.shape[1:] != self.inputs[0].shape:
            raise EngineError(
                f"synthetic: input must be FP32 {list(self.inputs[0].shape)}, got "
                f"{tensor.datatype} {list(tensor.array.shape[1:])}"
            )
        time.sleep(self.batch_seconds(tensor.batch))
        return {"output": Tensor("FP32", np.multiply(tensor.array, np.float32(2.0)))}

    def warmup(self) -> None:
        self.run({"input": Tensor("FP32", np.zeros((1, *self.inputs[0].shape), np.float32))})

    def close(self) -> None:
        pass


def build(params: dict[str, str]) -> SyntheticEngine:
    check_known(params, {"baseMs", "perItemMs", "width"}, "synthetic")
    return SyntheticEngine(
        base_ms=float_param(params, "baseMs", 20.0),
        per_item_ms=float_param(params, "perItemMs", 1.0),
        width=int_param(params, "width", 16),
    )
