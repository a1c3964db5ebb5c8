"""How many CPU cores this process may use (torch-free: the supervisor reads it)."""

from __future__ import annotations

import math
import os
from pathlib import Path


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


MAX_AUTO_FRONT_ENDS = 8


def front_end_count(configured: int) -> int:
    """``server.frontEnds``, or when 0: one per core the pod may use, less one for the
    engine core, at least 1 and at most 8."""
    if configured > 0:
        return configured
    return max(1, min(MAX_AUTO_FRONT_ENDS, available_cpus() - 1))
