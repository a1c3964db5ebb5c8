"""file:// (TorchScript, torch.export) and python:// sources, built in tmp_path."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from infleet_worker.config import WorkerConfig
from infleet_worker.engine.base import Engine, ModelLoadError
from infleet_worker.engine.loader import load_engine
from infleet_worker.engine.sources import SIGNATURE_FILE
from infleet_worker.tensors import Tensor

SIGNATURE = {
    "inputs": [{"name": "x", "datatype": "FP32", "shape": [8]}],
    "outputs": [{"name": "y", "datatype": "FP32", "shape": [4]}],
}


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.linear = nn.Linear(8, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.linear(x))


def config(source: str, **model: object) -> WorkerConfig:
    return WorkerConfig.model_validate(
        {
            "model": {"name": "m", "source": source, **model},
            "engine": {"device": "cpu"},
            "batching": {"maxBatchSize": 4},
        }
    )


def check_serves(engine: Engine, module: nn.Module, out_name: str = "y") -> None:
    engine.warmup()
    x = np.random.default_rng(0).standard_normal((3, 8)).astype(np.float32)
    out = engine.run({engine.inputs[0].name: Tensor("FP32", x)})[out_name]
    np.testing.assert_allclose(out.array, module(torch.from_numpy(x)).detach().numpy(), atol=1e-6)


def test_torchscript_with_signature_file(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    module = Tiny()
    torch.jit.save(torch.jit.script(module), str(path), {SIGNATURE_FILE: json.dumps(SIGNATURE)})
    engine = load_engine(config(f"file://{path}"))
    assert [(i.name, i.datatype, i.shape) for i in engine.inputs] == [("x", "FP32", (8,))]
    check_serves(engine, module)


def test_torchscript_signature_from_config(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt"
    module = Tiny()
    torch.jit.save(torch.jit.trace(module, torch.zeros(1, 8)), str(path))
    with pytest.raises(ModelLoadError, match=r"file://.*declares no signature"):
        load_engine(config(f"file://{path}"))
    check_serves(load_engine(config(f"file://{path}", **SIGNATURE)), module)


def test_torch_export_roundtrip_infers_signature(tmp_path: Path) -> None:
    path = tmp_path / "tiny.pt2"
    module = Tiny().eval()
    batch = torch.export.Dim("batch", min=1, max=64)
    program = torch.export.export(module, (torch.zeros(2, 8),), dynamic_shapes=({0: batch},))
    torch.export.save(program, str(path))
    engine = load_engine(config(f"file://{path}"))
    assert [(i.name, i.datatype, i.shape) for i in engine.inputs] == [("x", "FP32", (8,))]
    assert [(o.name, o.datatype, o.shape) for o in engine.outputs] == [("output", "FP32", (4,))]
    check_serves(engine, module, "output")


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ModelLoadError, match=r"file://.*nope.pt.*does not exist"):
        load_engine(config(f"file://{tmp_path}/nope.pt"))


@pytest.mark.parametrize("name", ["broken.pt", "broken.pt2"])
def test_broken_file_is_a_load_error(tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_bytes(b"this is not a model")
    with pytest.raises(ModelLoadError, match=rf"file://{path}: not a"):
        load_engine(config(f"file://{path}"))


@pytest.fixture
def factories(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    (tmp_path / "user_models.py").write_text(
        textwrap.dedent(
            """
            import numpy as np
            import torch
            from torch import nn
            from infleet_worker.engine.base import TensorInfo
            from infleet_worker.tensors import Tensor

            class Doubler(nn.Module):
                inputs = [TensorInfo("a", "FP32", (-1,))]
                outputs = [TensorInfo("b", "FP32", (-1,))]

                def __init__(self, factor):
                    super().__init__()
                    self.factor = factor

                def forward(self, a):
                    return {"b": a * self.factor}

            def module(params):
                return Doubler(float(params.get("factor", "2")))

            class Echo:
                name, version, max_batch_size, row_independent = "echo", "1", 0, True
                inputs = [TensorInfo("a", "BYTES", (1,))]
                outputs = [TensorInfo("a", "BYTES", (1,))]
                def run(self, inputs):
                    return dict(inputs)
                def warmup(self):
                    pass
                def close(self):
                    pass

            def engine(params):
                return Echo()

            def raising(params):
                raise RuntimeError("no GPU budget")

            def wrong(params):
                return 42
            """
        )
    )
    (tmp_path / "broken_models.py").write_text("import does_not_exist_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_models"


def test_python_factory_module(factories: str) -> None:
    engine = load_engine(config(f"python://{factories}:module", parameters={"factor": "3"}))
    engine.warmup()
    out = engine.run({"a": Tensor("FP32", np.ones((2, 5), np.float32))})["b"]
    assert out.array.shape == (2, 5) and (out.array == 3).all()


def test_python_factory_engine_is_adopted(factories: str) -> None:
    engine = load_engine(config(f"python://{factories}:engine"))
    assert engine.name == "m" and engine.max_batch_size == 4  # served under the config's


@pytest.mark.parametrize(
    ("target", "message"),
    [
        ("broken_models:f", r"cannot import broken_models: ModuleNotFoundError"),
        ("nowhere_at_all:f", r"cannot import nowhere_at_all"),
        ("user_models:absent", r"user_models has no callable 'absent'"),
        ("user_models:raising", r"factory raising raised RuntimeError: no GPU budget"),
        ("user_models:wrong", r"factory returned int"),
    ],
)
def test_python_source_errors(factories: str, target: str, message: str) -> None:
    with pytest.raises(ModelLoadError, match=rf"python://{target}: .*{message}|{message}"):
        load_engine(config(f"python://{target}"))
