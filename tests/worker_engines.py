"""Test engines for the worker: real torch modules behind the Engine seam.

Used in-process by the worker tests and, via ``python://worker_engines:<factory>``
with ``PYTHONPATH=tests``, by the ``infleet-worker`` subprocess tests. Every
factory takes the model's string parameters, as the loader calls them.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import torch
from torch import nn

from infleet_worker.engine.base import Domain, EngineError, TensorInfo
from infleet_worker.tensors import Tensor

IN_FEATURES = 16
OUT_FEATURES = 8


def make_module(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    module = nn.Sequential(
        nn.Linear(IN_FEATURES, 32), nn.ReLU(), nn.Linear(32, OUT_FEATURES)
    ).eval()
    return module


class MLPEngine:
    """FP32 input [16] -> ``output`` FP32 [8] (the module) and ``sum`` FP32 [1]."""

    row_independent = True

    def __init__(self, module: nn.Module | None = None, delay_s: float = 0.0) -> None:
        self.name = "mlp"
        self.version = "1"
        self.module = module if module is not None else make_module()
        self.inputs = [TensorInfo("input", "FP32", (IN_FEATURES,))]
        self.outputs = [
            TensorInfo("output", "FP32", (OUT_FEATURES,)),
            TensorInfo("sum", "FP32", (1,)),
        ]
        self.max_batch_size = 0  # the config's
        self.delay_s = delay_s
        self.batches: list[int] = []  # rows of every executed batch
        self.firsts: list[float] = []  # input[0, 0] of every executed batch
        self.warmed = False
        self.closed = False
        self.gate: threading.Event | None = None  # when set: run() waits for it
        self.started = threading.Event()  # set when a batch begins

    @property
    def executed_rows(self) -> int:
        return sum(self.batches)

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        self.started.set()
        if self.gate is not None:
            self.gate.wait(30)
        if self.delay_s:
            time.sleep(self.delay_s)
        x = torch.from_numpy(inputs["input"].array)
        with torch.inference_mode():
            y = self.module(x)
        self.batches.append(int(x.shape[0]))
        self.firsts.append(float(x[0, 0]))
        out = y.numpy()
        return {
            "output": Tensor("FP32", out),
            "sum": Tensor("FP32", out.sum(axis=1, keepdims=True)),
        }

    def warmup(self) -> None:
        gate, self.gate = self.gate, None
        self.run({"input": Tensor("FP32", np.zeros((1, IN_FEATURES), np.float32))})
        self.gate = gate
        self.started.clear()
        self.batches.clear()
        self.firsts.clear()
        self.warmed = True

    def close(self) -> None:
        self.closed = True


class EchoEngine:
    """One input ``INPUT`` of any datatype, shape [-1]; ``OUTPUT`` = INPUT (BYTES: reversed).

    ``DOUBLE`` (numeric only) is 2*INPUT computed by torch in the input dtype (BOOL: not)."""

    row_independent = True

    def __init__(self, datatype: str) -> None:
        self.name = "echo"
        self.version = "1"
        self.datatype = datatype
        self.inputs = [TensorInfo("INPUT", datatype, (-1,))]  # type: ignore[arg-type]
        self.outputs = [TensorInfo("OUTPUT", datatype, (-1,))]  # type: ignore[arg-type]
        if datatype != "BYTES":
            self.outputs.append(TensorInfo("DOUBLE", datatype, (-1,)))  # type: ignore[arg-type]
        self.max_batch_size = 0

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        t = inputs["INPUT"]
        if t.datatype != self.datatype:
            raise EngineError("wrong dtype")
        if self.datatype == "BYTES":
            out = np.empty(t.array.shape, dtype=object)
            for idx, v in np.ndenumerate(t.array):
                out[idx] = bytes(v)[::-1]
            return {"OUTPUT": Tensor("BYTES", out)}
        return {
            "OUTPUT": Tensor(t.datatype, t.array.copy()),
            "DOUBLE": Tensor(t.datatype, double(t)),
        }

    def warmup(self) -> None:
        pass

    def close(self) -> None:
        pass


def double(t: Tensor) -> np.ndarray:
    """2*x with torch in the tensor's own dtype (BOOL: logical not)."""
    if t.datatype == "BF16":
        x = torch.from_numpy(t.array.astype(np.uint16).view(np.int16)).view(torch.bfloat16)
        return (x * 2).view(torch.int16).numpy().view(np.uint16)
    if t.datatype == "BOOL":
        return ~t.array
    if t.datatype in ("UINT16", "UINT32", "UINT64"):
        return t.array * t.array.dtype.type(2)  # torch lacks arithmetic for these
    return (torch.from_numpy(t.array.copy()) * 2).numpy()


class FailingEngine(MLPEngine):
    """Raises EngineError when any input row starts with -999."""

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        if (inputs["input"].array[:, 0] == -999).any():
            raise EngineError("poisoned row")
        return super().run(inputs)


# -- python:// factories (the loader calls factory(parameters)) ------------------
def mlp(params: dict[str, str]) -> MLPEngine:
    return MLPEngine(delay_s=float(params.get("delay_ms", "0")) / 1000)


def slow_mlp(params: dict[str, str]) -> MLPEngine:
    return MLPEngine(delay_s=float(params.get("delay_ms", "50")) / 1000)


def echo(params: dict[str, str]) -> EchoEngine:
    return EchoEngine(params.get("datatype", "FP32"))


def broken(params: dict[str, str]) -> MLPEngine:
    raise RuntimeError("this model cannot load")


def failing(params: dict[str, str]) -> FailingEngine:
    return FailingEngine()


class PoisonEngine(MLPEngine):
    """MLPEngine whose ``output`` is declared finite, with sentinel rows (input[:, 0]):

    -999 the model raises; -555 that row's output is NaN; -666 a fatal device error
    (the text CUDA prints after a device-side assert); -777 the process dies."""

    def __init__(self, delay_s: float = 0.0) -> None:
        super().__init__(delay_s=delay_s)
        self.outputs = [
            TensorInfo("output", "FP32", (OUT_FEATURES,), domain=Domain(finite=True)),
            TensorInfo("sum", "FP32", (1,)),
        ]

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        first = inputs["input"].array[:, 0]
        if (first == -777).any():
            os.kill(os.getpid(), signal.SIGKILL)
        if (first == -666).any():
            raise EngineError("RuntimeError: CUDA error: device-side assert triggered")
        if (first == -999).any():
            raise EngineError("poisoned row")
        out = super().run(inputs)
        nan = first == -555
        if nan.any():
            out["output"].array[nan] = np.nan
        return out


def poison(params: dict[str, str]) -> PoisonEngine:
    return PoisonEngine(delay_s=float(params.get("delay_ms", "0")) / 1000)


class LookupModule(torch.nn.Module):
    """An embedding lookup with no declared domain: an id >= 16 is out of range, which
    on CUDA is a device-side assert (the context is lost), on CPU an IndexError."""

    row_independent = True
    inputs = [TensorInfo("ids", "INT64", (4,))]
    outputs = [TensorInfo("out", "FP32", (4,))]

    def __init__(self) -> None:
        super().__init__()
        self.table = torch.nn.Embedding(16, 4)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.table(ids).sum(dim=1)
        return out


def lookup(params: dict[str, str]) -> torch.nn.Module:
    return LookupModule().eval()
