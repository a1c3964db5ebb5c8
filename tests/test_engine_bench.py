"""bench/engine_ceiling.py runs end to end on a tiny model and prints its table."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest


def test_engine_ceiling_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parents[1] / "bench" / "engine_ceiling.py"
    spec = importlib.util.spec_from_file_location("engine_ceiling", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    argv = ["--models", "mlp,synthetic", "--param", "mlp:width=32", "--param", "mlp:depth=2"]
    argv += ["--precisions", "fp32,int8", "--batch-sizes", "1,2", "--iters", "1"]
    assert bench.main([*argv, "--device", "cpu"]) == 0
    lines = capsys.readouterr().out.splitlines()
    rows = [line.split() for line in lines if line.startswith(("mlp", "synthetic"))]
    assert [r[:3] for r in rows] == [
        ["mlp", "fp32", "1"],
        ["mlp", "fp32", "2"],
        ["mlp", "int8", "1"],
        ["mlp", "int8", "2"],
        ["synthetic", "fp32", "1"],
        ["synthetic", "fp32", "2"],
    ]
    assert all(float(r[4]) > 0 for r in rows)  # samples/s
