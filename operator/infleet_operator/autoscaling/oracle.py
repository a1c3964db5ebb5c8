"""Oracle: knows the true arrival intensity ahead of time (simulator only).

desired(t) = ceil(max rate over [t, t + lead + lookahead] / (capacity x utilisation))

A replica asked for at t is Ready at t + lead, so covering that window means
every second is served by replicas that were ordered in time, and none is kept
longer than the future requires. It is the cost reference ("lower bound") the
benchmark measures other policies against, not something deployable.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from infleet_operator.autoscaling.config import bounds_from, build_config
from infleet_operator.autoscaling.observations import Bounds, Decision, Observation, bounded


@dataclass(frozen=True)
class OracleConfig:
    rate: Sequence[float] = field(default_factory=tuple)  # expected req/s per step
    rate_step_s: float = 1.0
    capacity_per_replica: float = 40.0
    target_utilization: float = 0.7
    lead_s: float = 120.0
    lookahead_s: float = 15.0  # covers the tick interval and start-delay jitter


def window_max(values: Sequence[float], width: int) -> list[float]:
    """out[i] = max(values[i : i + width + 1]) in O(n) (monotone deque)."""
    n, out, dq = len(values), [0.0] * len(values), deque[int]()
    for j in range(n - 1, -1, -1):  # sweep right to left; window is [j, j + width]
        while dq and values[dq[-1]] <= values[j]:
            dq.pop()
        dq.append(j)
        while dq[0] > j + width:
            dq.popleft()
        out[j] = values[dq[0]]
    return out


class OraclePolicy:
    name = "oracle"

    def __init__(self, config: OracleConfig, bounds: Bounds) -> None:
        if not config.rate:
            raise ValueError("oracle needs the future arrival rate (param 'rate')")
        self.config, self.bounds = config, bounds
        width = math.ceil((config.lead_s + config.lookahead_s) / config.rate_step_s)
        self._max = window_max([float(x) for x in config.rate], width)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> OraclePolicy:
        return cls(build_config(OracleConfig, params, "target_utilization"), bounds_from(params))

    def decide(self, obs: Observation) -> Decision:
        c = self.config
        i = min(max(int(obs.time / c.rate_step_s), 0), len(self._max) - 1)
        peak = self._max[i]
        want = math.ceil(peak / (c.capacity_per_replica * c.target_utilization) - 1e-9)
        why = f"oracle: peak {peak:.1f} req/s before t+{c.lead_s + c.lookahead_s:.0f}s -> {want}"
        return bounded(want, self.bounds, why, peak)
