"""Kubernetes HPA v2 (autoscaling/v2) on queue depth per replica, with its default behavior.

Mirrors the replica calculator and ``behavior`` defaults of kube-controller-manager:
15 s sync, tolerance 0.1, unready pods counted as zero load on the way up,
scale-down stabilization 300 s (max of recommendations in the window),
scale-up max(+4 pods, +100%) per 15 s, scale-down 100% per 15 s.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from infleet_operator.autoscaling.config import bounds_from, build_config
from infleet_operator.autoscaling.observations import Bounds, Decision, Observation, bounded, hold


@dataclass(frozen=True)
class HpaConfig:
    target_per_replica: float = 10.0  # AverageValue target of the metric below
    metric: str = "concurrency"  # "concurrency" (queue + in-flight) or "queue"
    tolerance: float = 0.1
    sync_period_s: float = 15.0
    scale_down_stabilization_s: float = 300.0
    scale_up_stabilization_s: float = 0.0
    scale_up_pods: int = 4
    scale_up_percent: float = 100.0
    scale_up_period_s: float = 15.0
    scale_down_percent: float = 100.0
    scale_down_period_s: float = 15.0


class HpaPolicy:
    name = "hpa"

    def __init__(self, config: HpaConfig, bounds: Bounds) -> None:
        if config.target_per_replica <= 0:
            raise ValueError("hpa target_per_replica must be > 0")
        self.config, self.bounds = config, bounds
        self._recs: deque[tuple[float, int]] = deque()  # (time, recommendation)
        self._events: deque[tuple[float, int]] = deque()  # (time, replica change)
        self._last_sync: float | None = None
        self._last: Decision | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> HpaPolicy:
        return cls(build_config(HpaConfig, params, "target_per_replica"), bounds_from(params))

    def decide(self, obs: Observation) -> Decision:
        c = self.config
        if self._last_sync is not None and obs.time - self._last_sync < c.sync_period_s - 1e-9:
            if self._last is not None and self._last.desired_replicas == obs.current_replicas:
                return self._last  # keeps its reason and ScalingLimited until the next sync
            due = self._last_sync + c.sync_period_s - obs.time
            return bounded(obs.current_replicas, self.bounds, f"next HPA sync in {due:.0f}s")
        if not obs.has_data:
            return hold(obs, self.bounds, "metrics missing")
        self._last_sync = obs.time
        current, ready = obs.current_replicas, obs.ready_replicas
        if ready <= 0:
            return hold(obs, self.bounds, "no ready replicas report metrics")
        raw = (obs.queue_depth or 0.0) if c.metric == "queue" else obs.concurrency
        value = obs.demand(raw, c.target_per_replica)  # KV cache use, generative fleets
        ratio = value / ready / c.target_per_replica
        metric = _metric_name(c.metric, obs) if value == raw else "KV cache in use, as sequences,"
        why = f"{metric} {value:.0f} over {ready} ready = {value / ready:.1f}/replica"
        why += f" vs target {c.target_per_replica:g} (ratio {ratio:.2f})"
        rec = self._recommend(value, ratio, current, ready)
        rec = self._stabilize(obs.time, rec, current)
        rec, limit_note = self._rate_limit(obs.time, rec, current)
        decision = bounded(rec, self.bounds, why + f" -> {rec}" + limit_note)
        if decision.desired_replicas != current:
            self._events.append((obs.time, decision.desired_replicas - current))
        self._last = decision
        return decision

    def _recommend(self, value: float, ratio: float, current: int, ready: int) -> int:
        c = self.config
        if abs(ratio - 1.0) <= c.tolerance:
            return current
        if ratio > 1.0 and current > ready:
            # Unready pods count as zero usage; recheck the tolerance with them.
            ratio_all = value / current / c.target_per_replica
            if ratio_all <= 1.0 + c.tolerance:
                return current
            return math.ceil(ratio_all * current - 1e-9)
        return math.ceil(ratio * ready - 1e-9)

    def _stabilize(self, now: float, rec: int, current: int) -> int:
        c = self.config
        self._recs.append((now, rec))
        horizon = max(c.scale_down_stabilization_s, c.scale_up_stabilization_s)
        while self._recs and self._recs[0][0] < now - horizon:
            self._recs.popleft()
        up = min((r for t, r in self._recs if t >= now - c.scale_up_stabilization_s), default=rec)
        down = max(
            (r for t, r in self._recs if t >= now - c.scale_down_stabilization_s), default=rec
        )
        out = current
        if out < up:
            out = up
        if out > down:
            out = down
        return out

    def _rate_limit(self, now: float, rec: int, current: int) -> tuple[int, str]:
        c = self.config
        keep = max(c.scale_up_period_s, c.scale_down_period_s)
        while self._events and self._events[0][0] <= now - keep:
            self._events.popleft()
        if rec > current:
            added = sum(d for t, d in self._events if d > 0 and t > now - c.scale_up_period_s)
            start = current - added
            limit = max(start + c.scale_up_pods, math.ceil(start * (1 + c.scale_up_percent / 100)))
            if rec > limit:
                return limit, f"; scale-up rate limit {limit}"
        elif rec < current:
            deleted = -sum(d for t, d in self._events if d < 0 and t > now - c.scale_down_period_s)
            start = current + deleted
            limit = math.ceil(start * (1 - c.scale_down_percent / 100))
            if rec < limit:
                return limit, f"; scale-down rate limit {limit}"
        return rec, ""


def _metric_name(metric: str, obs: Observation) -> str:
    """How the reason names what was counted: requests, or a generative fleet's sequences
    (``memory_load`` is set only on the token signal, autoscaling/tokens.py)."""
    if obs.memory_load is None:
        return metric
    return "waiting sequences" if metric == "queue" else "sequences (waiting + running)"
