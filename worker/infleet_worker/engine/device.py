"""Which device the engine runs on, and how many CPU threads torch uses."""

from __future__ import annotations

import logging

import torch

from infleet_worker.cpus import available_cpus
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


_reserved_cpus = 0


def reserve_cpus(n: int) -> None:
    """Keep ``n`` cores off the engine's thread count: one per front-end process (or
    the in-process worker's event loop: transport, decode, batching). Measured on 2
    cores, gRPC client batch 16 at concurrency 64: 2 intra-op threads fighting the loop
    for the cores gave 18.2k rows/s, 1 thread 27.9k (OpenMP threads stall at each barrier while
    one of them is preempted)."""
    global _reserved_cpus
    _reserved_cpus = max(0, n)


def engine_cpus() -> int:
    """Cores for the engine's threads: the available ones less the reserved, at least 1."""
    return max(1, available_cpus() - _reserved_cpus)


def set_cpu_threads() -> int:
    """intra-op threads = cores available to the pod (cgroup CPU limit), less reserved ones."""
    threads = engine_cpus()
    if torch.get_num_threads() != threads:
        torch.set_num_threads(threads)
    log.info("torch CPU intra-op threads: %d", threads)
    return threads
