"""GPU metrics of the pod through NVML (``nvidia-ml-py``), under Triton's names.

``nv_gpu_utilization`` (0..1), ``nv_gpu_memory_total_bytes``, ``nv_gpu_memory_used_bytes``,
``nv_gpu_power_usage`` and ``nv_gpu_power_limit`` (watts), one series per GPU labelled
``gpu_uuid`` (Triton's label) plus the pod's ``model`` and ``version`` (so a dashboard
selects a fleet's GPUs as it selects its other series), read at scrape time. Without
a GPU (no NVML library, no driver, no device) the series are absent, never zero: a
dashboard shows "no data", not an idle GPU. A value NVML cannot give for a device
(power on some boards) is left out alone.

Registered by exactly one process of a pod (the supervisor), so the pod's scrape,
which sums series over processes, counts each GPU once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

log = logging.getLogger("infleet_worker.gpu_metrics")

LABELS = ("gpu_uuid", "model", "version")


def _load_nvml() -> Any | None:
    """The initialised ``pynvml`` module, or None when this host has no usable GPU."""
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() == 0:
            return None
    except pynvml.NVMLError as e:
        log.info("no GPU metrics: %s", e)
        return None
    return pynvml


def visible(index: int, uuid: str, spec: str | None) -> bool:
    """Whether GPU ``index``/``uuid`` is one of CUDA_VISIBLE_DEVICES (all when unset)."""
    if spec is None or spec.strip() == "":
        return spec is None
    wanted = [s.strip() for s in spec.split(",") if s.strip()]
    return str(index) in wanted or any(uuid.startswith(w) for w in wanted if not w.isdigit())


class GpuCollector(Collector):
    def __init__(
        self,
        model: str,
        version: str,
        nvml: Any | None = None,
        load: Callable[[], Any | None] = _load_nvml,
    ):
        self.model, self.version = model, version
        self.nvml: Any = nvml if nvml is not None else load()

    @property
    def present(self) -> bool:
        return self.nvml is not None

    def _devices(self, nv: Any) -> list[tuple[str, Any]]:
        spec = os.environ.get("CUDA_VISIBLE_DEVICES")
        out = []
        for i in range(nv.nvmlDeviceGetCount()):
            handle = nv.nvmlDeviceGetHandleByIndex(i)
            uuid = nv.nvmlDeviceGetUUID(handle)
            uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
            if visible(i, uuid, spec):
                out.append((uuid, handle))
        return out

    def collect(self) -> Iterator[Metric]:
        if self.nvml is None:
            return
        nv = self.nvml
        util = GaugeMetricFamily(
            "nv_gpu_utilization", "GPU utilization rate [0.0 - 1.0)", labels=LABELS
        )
        total = GaugeMetricFamily(
            "nv_gpu_memory_total_bytes", "GPU total memory, in bytes", labels=LABELS
        )
        used = GaugeMetricFamily(
            "nv_gpu_memory_used_bytes", "GPU used memory, in bytes", labels=LABELS
        )
        power = GaugeMetricFamily("nv_gpu_power_usage", "GPU power usage in watts", labels=LABELS)
        limit = GaugeMetricFamily(
            "nv_gpu_power_limit", "GPU power management limit in watts", labels=LABELS
        )
        try:
            devices = self._devices(nv)
        except nv.NVMLError as e:
            log.warning("NVML failed listing GPUs: %s", e)
            return
        reads: list[tuple[GaugeMetricFamily, Callable[[Any], float]]] = [
            (util, lambda d: nv.nvmlDeviceGetUtilizationRates(d).gpu / 100.0),
            (total, lambda d: float(nv.nvmlDeviceGetMemoryInfo(d).total)),
            (used, lambda d: float(nv.nvmlDeviceGetMemoryInfo(d).used)),
            (power, lambda d: nv.nvmlDeviceGetPowerUsage(d) / 1000.0),
            (limit, lambda d: nv.nvmlDeviceGetPowerManagementLimit(d) / 1000.0),
        ]
        for uuid, h in devices:
            for family, read in reads:
                try:
                    family.add_metric([uuid, self.model, self.version], read(h))
                except nv.NVMLError:
                    continue  # not supported on this board: absent, not zero
        for family in (util, total, used, power, limit):
            if family.samples:
                yield family
