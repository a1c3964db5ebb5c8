"""What a simulated run produces: per-request latency, cost, and the autoscaler's record."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from infleet_operator.autoscaling import Decision, Observation, Plan
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


class DecisionLog:
    """The autoscaler's decisions in a run: a TICK_COLUMNS row each, and the scale actions."""

    __slots__ = ("actions", "limited", "reasons", "rows")

    def __init__(self) -> None:
        self.rows: list[tuple[float, ...]] = []
        self.reasons: list[tuple[float, int, int, str]] = []
        self.actions = self.limited = 0

    def record(self, now: float, obs: Observation, d: Decision, plan: Plan) -> None:
        nan = math.nan
        self.rows.append(
            (
                now,
                obs.arrival_rate if obs.arrival_rate is not None else nan,
                obs.current_replicas,
                obs.ready_replicas,
                plan.replicas,
                d.forecast_rate if d.forecast_rate is not None else nan,
                obs.completion_rate if obs.completion_rate is not None else nan,
            )
        )
        if d.limited_by is not None:
            self.limited += 1
        if plan.changed:
            self.actions += 1
            self.reasons.append((now, obs.current_replicas, plan.replicas, plan.reason))

    def ticks(self) -> np.ndarray:
        return np.asarray(self.rows, dtype=np.float64).reshape(-1, len(TICK_COLUMNS))
