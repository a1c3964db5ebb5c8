"""What a simulated run produces: per-request latency, cost, and the autoscaler's record."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from infleet_operator.simulator.gen_report import GenStats

TICK_COLUMNS = ("time", "arrival_rate", "current", "ready", "desired", "forecast", "served_rate")


@dataclass
class SimResult:
    arrivals: np.ndarray
    latency: np.ndarray  # seconds per request; nan = dropped or never served
    duration: float
    replica_seconds: float
    scale_actions: int
    ticks: np.ndarray  # columns: TICK_COLUMNS
    limited_ticks: int
    completed: int  # requests served (each exactly once)
    timed_out: int  # dropped explicitly: waited past the timeout, or no endpoint
    reasons: list[tuple[float, int, int, str]] = field(default_factory=list)  # scale actions
    priority: np.ndarray | None = None  # level per request, when the trace has levels
    refused: np.ndarray | None = None  # True where shedding refused the request
    generation: GenStats | None = None  # a generative fleet's tokens/s, TTFT and ITL

    @property
    def dropped(self) -> int:
        return int(np.isnan(self.latency).sum())
