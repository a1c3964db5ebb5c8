"""Every Triton-compatible metric documented in docs/worker.md is exported, with exactly
the documented labels and Triton's meaning, by a real worker pod (supervisor, front
ends, engine core: the series are summed over processes) and by the in-process worker."""

from __future__ import annotations

import re
import shutil
import subprocess
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import tritonclient.http as httpclient
from prometheus_client.parser import text_string_to_metric_families
from tritonclient.utils import InferenceServerException

from infleet_worker.gpu_metrics import GpuCollector
from worker_engines import IN_FEATURES
from worker_fixtures import ServerThread
from worker_process import WorkerProcess

pytestmark = pytest.mark.timeout(120)

DOC = Path(__file__).resolve().parents[1] / "docs" / "worker.md"
HAS_GPU = GpuCollector("m", "1").present
ROW = re.compile(r"^\| `(nv_[a-z_]+)` \| ([^|]+) \|")


def documented() -> dict[str, set[str]]:
    """The Triton table of docs/worker.md: name -> label names."""
    text = DOC.read_text().split("### Triton-compatible metrics", 1)[1].split("\n#", 1)[0]
    rows = {}
    for line in text.splitlines():
        m = ROW.match(line)
        if m:
            rows[m.group(1)] = set(re.findall(r"`([a-z_]+)`", m.group(2)))
    return rows


def test_the_documented_table_is_read() -> None:
    rows = documented()
    assert len(rows) >= 10
    assert rows["nv_inference_request_failure"] == {"model", "version", "reason"}
    assert rows["nv_inference_count"] == {"model", "version"}


def scrape(url: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    page = urllib.request.urlopen(url, timeout=10).read().decode()
    series: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(page):
        for s in fam.samples:
            series.setdefault(s.name, []).append((s.labels, s.value))
    return series


def exercise(http_url: str) -> int:
    """Four good requests (7 rows) and one invalid one; returns the good rows."""
    client = httpclient.InferenceServerClient(http_url, network_timeout=60)
    rows = 0
    for n in (1, 2, 3, 1):
        i = httpclient.InferInput("input", [n, IN_FEATURES], "FP32")
        i.set_data_from_numpy(np.ones((n, IN_FEATURES), np.float32))
        client.infer("mlp", [i])
        rows += n
    bad = httpclient.InferInput("input", [1, IN_FEATURES + 1], "FP32")
    bad.set_data_from_numpy(np.ones((1, IN_FEATURES + 1), np.float32))
    with pytest.raises(InferenceServerException):
        client.infer("mlp", [bad])
    client.close()
    return rows


def check(series: dict[str, list[tuple[dict[str, str], float]]], rows: int) -> None:
    for name, labels in documented().items():
        assert name in series, f"{name} is documented but not exported"
        for got, _ in series[name]:
            assert set(got) == labels, f"{name}: labels {sorted(got)}, documented {labels}"
            assert got["model"] == "mlp" and got["version"] == "1"

    def value(name: str, **match: str) -> float:
        return sum(v for lab, v in series[name] if all(lab.get(k) == x for k, x in match.items()))

    assert value("nv_inference_request_success") == 4
    assert value("nv_inference_request_failure", reason="OTHER") == 1
    assert value("nv_inference_request_failure", reason="BACKEND") == 0
    assert value("nv_inference_count") == rows
    assert value("nv_inference_exec_count") == value("infleet_batches_total") >= 1
    assert value("nv_inference_compute_infer_duration_us") > 0
    assert value("nv_inference_request_duration_us") >= value("nv_inference_queue_duration_us")
    assert value("nv_inference_pending_request_count") == 0


def assert_prometheus_parses(page: bytes) -> None:
    """Prometheus' own parser (promtool, from Debian's prometheus) reads the page: exit 3
    is lint advice only (Triton's names break its naming rules), 1 a parse error."""
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed: run scripts/bootstrap.sh")
    r = subprocess.run([promtool, "check", "metrics"], input=page, capture_output=True)
    assert r.returncode in (0, 3), r.stdout + r.stderr


def test_a_worker_pod_exports_the_triton_metrics(tmp_path: Path) -> None:
    w = WorkerProcess(
        "--model-source", "python://worker_engines:mlp", "--model-name", "mlp",
        "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
        "--front-ends", "2", "--drain-seconds", "0",
        cwd=tmp_path,
    )  # fmt: skip
    try:
        w.wait_ready()
        rows = exercise(f"127.0.0.1:{w.ports['http']}")
        url = f"http://127.0.0.1:{w.ports['metrics']}/metrics"
        series = scrape(url)
        check(series, rows)
        assert_prometheus_parses(urllib.request.urlopen(url, timeout=10).read())
        if not HAS_GPU:  # absent, not zero (tests/test_gpu_metrics.py)
            assert not [n for n in series if n.startswith("nv_gpu_")]
    finally:
        w.stop()


def test_the_in_process_worker_exports_the_triton_metrics(mlp_server: ServerThread) -> None:
    rows = exercise(mlp_server.http_url)
    check(scrape(mlp_server.metrics_url), rows)
    assert_prometheus_parses(urllib.request.urlopen(mlp_server.metrics_url, timeout=10).read())
