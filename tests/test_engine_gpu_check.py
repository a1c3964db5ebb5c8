"""``make gpu-check`` on a machine without a GPU: says what it skipped, runs the
CPU-sized benches, prints the one table and exits 0. (On a GPU machine it is the GPU
check itself, run by hand: it is not repeated here.)"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # two bench subprocesses: ~10-25 s on 2 busy cores
@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU, gpu-check runs the GPU steps")
def test_gpu_check_without_a_gpu_says_so_and_exits_0() -> None:
    out = subprocess.run(
        [sys.executable, "bench/gpu_check.py"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    text = out.stdout + out.stderr
    assert out.returncode == 0, text
    assert "no CUDA GPU visible" in text
    assert "skipped: tests/test_engine_cuda.py, tests/test_pipeline_gpu.py" in text
    summary = text[text.index("== gpu-check on no CUDA GPU") :]
    assert "pipeline bench (CPU-sized)" in summary and "PASS" in summary
    assert "pp2 / pp1 rows/s" in summary and "no figures" not in summary
    assert "mlp int8 / fp32 rows/s (b1 | b8)" in summary
    assert "mlp fp8" in summary and "refused: precision fp8 needs a GPU" in summary


def test_summary_table_reports_timeouts_and_ratios() -> None:
    import gpu_check  # bench/ is on PYTHONPATH
    import gpu_check_table

    hung = gpu_check.Step("GPU tests", [sys.executable, "-c", "import time; time.sleep(60)"], 0.5)
    gpu_check.run_step(hung, gpu_check.environment([]))
    assert hung.rc == 124 and hung.status == "TIMEOUT (0s)" and hung.seconds < 5
    ceiling = [
        {"model": "encoder-base", "precision": p, "batch": b, "ms": 1.0, "rows_per_s": r * b}
        for p, r in (("bf16", 100.0), ("int8", 150.0))
        for b in (1, 128)
    ] + [
        {
            "model": "raw-encoder",
            "precision": "bf16",
            "batch": b,
            "ms": 1.0,
            "rows_per_s": 125.0 * b,
        }
        for b in (1, 128)
    ]
    table = gpu_check_table.summary(
        "head",
        [hung],
        {"pipeline": {"rows_per_s": {"1": 100.0, "2": 97.0}}, "ceiling": ceiling},
        [],
        1.0,
    )
    assert "TIMEOUT" in table
    assert "0.970  (pp1 100, pp2 97 rows/s)" in table
    rows = dict(line.split("  ", 1) for line in table.splitlines()[3:] if "  " in line)
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["encoder-base int8 / bf16 rows/s (b1 | b128)"] == "1.50 | 1.50"
    assert rows["encoder-base engine / raw encoder, bf16 (b1 | b128)"] == "0.80 | 0.80"
