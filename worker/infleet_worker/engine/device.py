"""Which device the engine runs on, and how many CPU threads torch uses."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path

import torch

from infleet_worker.engine.base import ModelLoadError

log = logging.getLogger(__name__)


def select_device(requested: str) -> torch.device:
    """auto -> cuda when a GPU is visible, else cpu; cuda without a GPU is a load error."""
    if requested == "cpu":
        return torch.device("cpu")
    if torch.cuda.is_available():
        return torch.device("cuda", torch.cuda.current_device())
    if requested == "cuda":
        raise ModelLoadError("engine.device is cuda but no CUDA device is visible to the worker")
    return torch.device("cpu")


def available_cpus() -> int:
    """Cores this process may use: CPU affinity, capped by a cgroup v2 CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cores = os.cpu_count() or 1
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()[:2]
        if quota != "max":
            cores = min(cores, max(1, math.ceil(int(quota) / int(period))))
    except (OSError, ValueError):
        pass
    return max(1, cores)


def set_cpu_threads() -> int:
    """intra-op threads = cores available to the pod (Kubernetes CPU limit via cgroups)."""
    threads = available_cpus()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    log.info("torch CPU intra-op threads: %d", threads)
    return threads
