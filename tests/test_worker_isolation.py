"""batch_run: a failed batch is bisected so only the guilty requests fail; fatal errors
are not bisected; the in-process batcher gives each member its own answer."""

from __future__ import annotations

import numpy as np
import pytest

from infleet_worker.batch_run import FatalDeviceError, run_batch
from infleet_worker.engine.base import DeviceLostError, Domain, EngineError, TensorInfo
from infleet_worker.protocol.errors import InferError
from infleet_worker.tensors import Tensor


def _member(*values: float) -> dict[str, Tensor]:
    return {"x": Tensor("FP32", np.array([[v, 1.0] for v in values], np.float32))}


class Model:
    """Doubles x; raises on a row starting with -1; NaN for a row starting with -2."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def __call__(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        x = inputs["x"].array
        self.calls.append(len(x))
        if (x[:, 0] == -1).any():
            raise EngineError("poisoned row")
        y = x * 2
        y[x[:, 0] == -2] = np.nan
        return {"y": Tensor("FP32", y)}


OUT = {"y": TensorInfo("y", "FP32", (2,), domain=Domain(finite=True))}


def test_good_batch_runs_once() -> None:
    model = Model()
    members = [_member(1), _member(2, 3), _member(4)]
    out = run_batch(model, members, [1, 2, 1], OUT)
    assert model.calls == [4] and out.runs == 1 and out.isolated == 0
    assert [r["y"].array[:, 0].tolist() for r in out.results] == [[2], [4, 6], [8]]  # type: ignore[index]


def test_poisoned_member_fails_alone_with_bounded_runs() -> None:
    model = Model()
    members = [_member(k) for k in range(1, 16)] + [_member(-1)]
    out = run_batch(model, members, [1] * 16, OUT)
    assert isinstance(out.results[-1], InferError) and "poisoned row" in out.results[-1].message
    assert all(not isinstance(r, InferError) for r in out.results[:-1])
    assert out.isolated == 1
    assert out.runs <= 2 * len(members) + 1
    assert out.results[3]["y"].array[0, 0] == 8  # type: ignore[index]


def test_nonfinite_row_fails_only_its_request() -> None:
    out = run_batch(Model(), [_member(1), _member(5, -2), _member(3)], [1, 2, 1], OUT)
    assert isinstance(out.results[1], InferError)
    assert "output 'y' is not finite" in out.results[1].message
    assert not isinstance(out.results[0], InferError) and not isinstance(out.results[2], InferError)
    # undeclared outputs are not checked
    out = run_batch(Model(), [_member(-2)], [1], {"y": TensorInfo("y", "FP32", (2,))})
    assert not isinstance(out.results[0], InferError)


@pytest.mark.parametrize(
    "error",
    [
        EngineError("m: RuntimeError: CUDA error: device-side assert triggered"),
        DeviceLostError("pipeline stage 2 of 2 made no progress"),
    ],
)
def test_fatal_errors_are_not_bisected(error: Exception) -> None:
    calls = []

    def model(inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        calls.append(1)
        raise error

    with pytest.raises(FatalDeviceError):
        run_batch(model, [_member(1), _member(2), _member(3)], [1, 1, 1], OUT)
    assert len(calls) == 1
