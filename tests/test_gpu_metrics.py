"""GPU metrics through NVML: absent (not zero) without a GPU; on a GPU, Triton's names
with real values, exported once per pod (by the supervisor)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from infleet_worker.gpu_metrics import GpuCollector, _load_nvml, visible

HAS_GPU = _load_nvml() is not None
ML = {"model": "m", "version": "1"}
GPU_NAMES = {
    "nv_gpu_utilization",
    "nv_gpu_memory_total_bytes",
    "nv_gpu_memory_used_bytes",
    "nv_gpu_power_usage",
    "nv_gpu_power_limit",
}


def exported(collector: GpuCollector) -> dict[str, list[tuple[dict[str, str], float]]]:
    registry = CollectorRegistry()
    registry.register(collector)
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


@pytest.mark.skipif(HAS_GPU, reason="this host has a GPU")
def test_without_a_gpu_the_series_are_absent() -> None:
    collector = GpuCollector("m", "1")
    assert not collector.present
    assert exported(collector) == {}


class NVMLError(Exception):
    pass


@dataclass
class _Mem:
    total: int
    used: int


@dataclass
class _Util:
    gpu: int


class StubNVML:
    """Two boards; the second cannot report power (as some boards cannot)."""

    NVMLError = NVMLError

    def nvmlDeviceGetCount(self) -> int:
        return 2

    def nvmlDeviceGetHandleByIndex(self, i: int) -> int:
        return i

    def nvmlDeviceGetUUID(self, h: int) -> bytes:
        return f"GPU-{h}aaa".encode()

    def nvmlDeviceGetUtilizationRates(self, h: int) -> _Util:
        return _Util(40 + h)

    def nvmlDeviceGetMemoryInfo(self, h: int) -> _Mem:
        return _Mem(80 << 30, (10 + h) << 30)

    def nvmlDeviceGetPowerUsage(self, h: int) -> int:
        if h == 1:
            raise NVMLError("Not Supported")
        return 250_500

    def nvmlDeviceGetPowerManagementLimit(self, h: int) -> int:
        if h == 1:
            raise NVMLError("Not Supported")
        return 700_000


def test_values_units_and_labels_per_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """What NVML gives becomes Triton's units (fraction, bytes, watts); a value a board
    cannot give is absent for that board only."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    got = exported(GpuCollector("m", "1", StubNVML()))
    assert set(got) == GPU_NAMES
    assert got["nv_gpu_utilization"] == [
        ({"gpu_uuid": "GPU-0aaa", **ML}, 0.40),
        ({"gpu_uuid": "GPU-1aaa", **ML}, 0.41),
    ]
    assert got["nv_gpu_memory_used_bytes"][1] == ({"gpu_uuid": "GPU-1aaa", **ML}, float(11 << 30))
    assert got["nv_gpu_power_usage"] == [({"gpu_uuid": "GPU-0aaa", **ML}, 250.5)]
    assert got["nv_gpu_power_limit"] == [({"gpu_uuid": "GPU-0aaa", **ML}, 700.0)]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    only = exported(GpuCollector("m", "1", StubNVML()))
    assert [lab["gpu_uuid"] for lab, _ in only["nv_gpu_utilization"]] == ["GPU-1aaa"]


def test_cuda_visible_devices() -> None:
    assert visible(0, "GPU-abc", None)
    assert not visible(0, "GPU-abc", "")
    assert visible(2, "GPU-abc", "0,2") and not visible(1, "GPU-abc", "0,2")
    assert visible(5, "GPU-abcdef", "GPU-abc") and not visible(5, "GPU-xyz", "GPU-abc")


@pytest.mark.skipif(not HAS_GPU, reason="needs an NVIDIA GPU and driver")
def test_on_a_gpu_a_worker_pod_exports_each_gpu_once(tmp_path: Path) -> None:
    import urllib.request

    from worker_process import WorkerProcess

    w = WorkerProcess(
        "--model-source", "python://worker_engines:mlp", "--model-name", "mlp",
        "--host", "127.0.0.1", "--http-port", "0", "--grpc-port", "0", "--metrics-port", "0",
        "--front-ends", "2", "--drain-seconds", "0",
        cwd=tmp_path,
    )  # fmt: skip
    try:
        w.wait_ready()
        page = urllib.request.urlopen(f"http://127.0.0.1:{w.ports['metrics']}/metrics").read()
    finally:
        w.stop()
    got: dict[str, Any] = {}
    for fam in text_string_to_metric_families(page.decode()):
        for s in fam.samples:
            got.setdefault(s.name, []).append((s.labels["gpu_uuid"], s.value))
    direct = exported(GpuCollector("mlp", "1"))
    assert {"nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes"} <= set(
        got
    )
    # Summed over the pod's processes, yet equal to one reading: exported once.
    assert got["nv_gpu_memory_total_bytes"] == [
        (lab["gpu_uuid"], v) for lab, v in direct["nv_gpu_memory_total_bytes"]
    ]
    assert all(0.0 <= v <= 1.0 for _, v in got["nv_gpu_utilization"])
