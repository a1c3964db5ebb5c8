"""bench/serving.py runs end to end against an infleet worker subprocess and prints its table."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


@pytest.mark.slow
def test_serving_smoke(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bench_dir = Path(__file__).resolve().parents[1] / "bench"
    monkeypatch.syspath_prepend(str(bench_dir))  # serving.py imports its sibling serverproc
    path = bench_dir / "serving.py"
    spec = importlib.util.spec_from_file_location("bench_serving", path)
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, spec.name, bench)  # dataclasses look the module up
    spec.loader.exec_module(bench)
    argv = ["--serve-infleet", "--serve-floor", "--width", "32", "--model-param", "depth=2"]
    argv += ["--concurrency", "1,2", "--batch", "1,4", "--duration", "0.5", "--warmup", "0.2"]
    argv += ["--protocol", "grpc,http", "--max-batch-size", "8", "--log-dir", str(tmp_path)]
    assert bench.main(argv) == 0
    out = capsys.readouterr()
    assert "outputs match torch" in out.err
    rows = [line.split() for line in out.out.splitlines() if line.startswith("infleet ")]
    assert [r[1:4] for r in rows] == [
        [proto, str(conc), str(batch)]
        for proto in ("grpc", "http")
        for batch in (1, 4)
        for conc in (1, 2)
    ]
    # infer/s, rows/s, server batch rows, server CPU (the worker was started here), errors
    assert all(
        float(r[4]) > 0
        and float(r[5]) > 0
        and float(r[8]) >= 1
        and float(r[9]) > 0
        and r[11] == "0"
        for r in rows
    )
    floor = [line.split() for line in out.out.splitlines() if line.startswith("grpc-floor ")]
    assert [r[1:4] for r in floor] == [
        ["grpc", str(conc), str(batch)] for batch in (1, 4) for conc in (1, 2)
    ]
    assert all(float(r[4]) > 0 and r[11] == "0" for r in floor)
    assert "grpc-floor rows/s" in out.out  # infleet against the floor, side by side
