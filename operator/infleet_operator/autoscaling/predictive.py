"""Predictive policy: provision for the arrival rate one pod-start ahead.

replicas = (forecast rate at now + lead  +  backlog / drain horizon)
           / (capacity per replica x target utilisation)

- lead = pod start-to-Ready time: a replica asked for now serves from then on.
- capacity per replica starts at a prior and learns from ticks where the fleet
  is saturated (a backlog per ready replica, at this tick and the one before),
  where completions per ready replica are the throughput a replica really
  reaches with full batches.
- up and down use different headroom (a dead band), scale-up is immediate,
  scale-down waits until the lower target has held for a window (one lead
  unless the spec sets ``scaleDownStabilizationSeconds``) and then steps down
  by bounded amounts.
- burst-aware headroom (``burst_quantile`` > 0): the plan is multiplied by
  1 + the quantile of how much the rate rose within one lead in this trace's
  own history (:mod:`infleet_operator.autoscaling.bursts`), capped.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from typing import Any

from infleet_operator.autoscaling.bursts import RiseQuantile
from infleet_operator.autoscaling.config import bounds_from, build_config
from infleet_operator.autoscaling.forecast import ForecastConfig, HoltForecaster
from infleet_operator.autoscaling.observations import Bounds, Decision, Observation, bounded, hold


@dataclass(frozen=True)
class PredictiveConfig:
    target_utilization: float = 0.7  # share of saturated throughput to plan for
    lead_s: float = 120.0  # pod start-to-Ready time; the operator passes the measured one
    capacity_per_replica: float = 40.0  # prior: req/s one replica finishes when saturated
    learn_capacity: bool = True
    saturation_queue_per_replica: float = 8.0  # backlog per ready replica that means "saturated"
    capacity_alpha: float = 0.05
    drain_horizon_s: float = 60.0
    normal_queue_per_replica: float = 4.0  # queue that batching keeps anyway; not backlog
    headroom_up: float = 0.15  # capacity over the plan when scaling up (forecast error)
    headroom_down: float = 0.10  # what a scale-down keeps; scale-up triggers at 0 headroom
    # A lower target must hold this long before scaling down. None: one lead (the pod
    # start), since a replica let go in a shorter dip could not be back when load returns,
    # and one held longer costs replica-seconds no return of load within a lead needs.
    down_window_s: float | None = None
    down_step_fraction: float = 0.2  # at most this share of replicas removed per step
    down_step_interval_s: float = 30.0
    level_tau_s: float = 20.0
    # Scale-up also watches a fast EWMA of the arrival rate: the slow level lags a ramp
    # by about slope x level_tau_s, which is longer than a pod start on small models.
    # Asymmetric smoothing: quick up, slow (hysteretic) down.
    fast_tau_s: float = 4.0
    trend_tau_s: float = 120.0
    damping_tau_s: float = 600.0
    season_period_s: float = 86400.0
    burst_quantile: float = 0.0  # 0 = off; else keep headroom for this quantile of rises
    burst_max_headroom: float = 1.0  # at most this share on top of the plan
    burst_history_s: float = 86400.0  # rises remembered this long


class PredictivePolicy:
    name = "predictive"

    def __init__(self, config: PredictiveConfig, bounds: Bounds) -> None:
        if not 0 < config.target_utilization <= 1.5:
            raise ValueError("predictive target_utilization must be in (0, 1.5]")
        self.config, self.bounds = config, bounds
        fc = {f.name for f in fields(ForecastConfig)}
        self.forecaster = HoltForecaster(
            ForecastConfig(**{k: v for k, v in vars(config).items() if k in fc})
        )
        self.capacity = config.capacity_per_replica
        self._down: deque[tuple[float, int]] = deque()  # (time, scale-down candidate)
        self._last_down_step = -math.inf
        self._down_since = -math.inf
        self._fast = 0.0
        self._fast_t: float | None = None
        self._backlogged = False  # the previous tick saw a saturation backlog
        if not 0 <= config.burst_quantile < 1:
            raise ValueError("predictive burst_quantile must be in [0, 1)")
        self.rises = RiseQuantile(max(config.lead_s, 1.0), config.burst_history_s)

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> PredictivePolicy:
        return cls(
            build_config(PredictiveConfig, params, "target_utilization"), bounds_from(params)
        )

    def set_lead(self, lead_s: float) -> None:
        """A new measured pod start: plan that far ahead from now on, keeping what was learnt."""
        self.config = replace(self.config, lead_s=lead_s)
        self.rises.lead_s = max(lead_s, 1.0)

    def decide(self, obs: Observation) -> Decision:
        if not obs.has_data:
            self._down.clear()  # a gap restarts the scale-down hold
            self._backlogged = False
            return hold(obs, self.bounds, "metrics missing")
        c = self.config
        assert obs.arrival_rate is not None and obs.queue_depth is not None
        self.forecaster.update(obs.time, obs.arrival_rate)
        self._learn_capacity(obs)
        level = max(0.0, self.forecaster.level or 0.0)  # a falling trend can dip below 0
        fast = self._update_fast(obs.time, obs.arrival_rate)
        burst = self._burst_headroom(obs.time, fast)
        rate = max(self.forecaster.forecast(c.lead_s), level)
        queued = max(0.0, obs.queue_depth - c.normal_queue_per_replica * obs.ready_replicas)
        backlog = queued * obs.work_per_request  # in the rate's unit (tokens for generation)
        load = rate + backlog / c.drain_horizon_s
        load_up = max(rate, fast) + backlog / c.drain_horizon_s
        per_replica = self.capacity * c.target_utilization / (1.0 + burst)
        memory = obs.memory_load or 0.0  # replicas' worth of KV cache in use (generation)
        trigger = _ceil(max(load_up / per_replica, memory))
        up, down = 1 + c.headroom_up, 1 + c.headroom_down
        need_up = _ceil(max(load_up * up / per_replica, memory * up))
        need_down = _ceil(max(load * down / per_replica, memory * down))
        if fast > rate:
            rate = fast  # what the decision below is planning for
        current = obs.current_replicas
        unit = "req/s" if obs.memory_load is None else "tokens/s"
        why = (
            f"forecast {rate:.1f} {unit} in {c.lead_s:.0f}s (now {level:.1f})"
            f" + backlog {backlog:.0f}/{c.drain_horizon_s:.0f}s"
            f" over {per_replica:.1f} {unit}/replica"
        )
        if burst > 0:
            why += f" (burst headroom +{burst:.0%})"
        if obs.memory_load is not None:
            why += f"; KV cache in use fills {memory:.1f} replicas at target"
        if trigger > current:
            self._down.clear()
            return bounded(need_up, self.bounds, f"{why} -> up to {need_up}", rate)
        want, note = self._scale_down(obs.time, need_down, current)
        return bounded(want, self.bounds, f"{why} -> {note}", rate, goal=min(want, need_down))

    def _burst_headroom(self, t: float, fast: float) -> float:
        c = self.config
        if c.burst_quantile <= 0:
            return 0.0
        self.rises.update(t, fast)
        return min(self.rises.quantile(c.burst_quantile), c.burst_max_headroom)

    def _update_fast(self, t: float, value: float) -> float:
        if self._fast_t is None or t <= self._fast_t:
            self._fast, self._fast_t = value, t
            return self._fast
        a = 1.0 - math.exp(-(t - self._fast_t) / self.config.fast_tau_s)
        self._fast += a * (value - self._fast)
        self._fast_t = t
        return self._fast

    @property
    def down_window_s(self) -> float:
        c = self.config
        return c.lead_s if c.down_window_s is None else c.down_window_s

    def _scale_down(self, now: float, need: int, current: int) -> tuple[int, str]:
        c, window = self.config, self.down_window_s
        if need >= current:
            self._down.clear()
            return current, f"hold at {current} (within dead band)"
        if not self._down:
            self._down_since = now  # a new below-target streak starts
        self._down.append((now, need))
        while self._down and self._down[0][0] < now - window:
            self._down.popleft()
        # The streak's age, not the oldest retained sample's: after trimming, that one is
        # never a full window old unless the window is a multiple of the tick.
        held = now - self._down_since
        if held < window - 1e-9:
            return current, f"hold at {current}: {need} for {held:.0f}s of {window:.0f}s"
        if now - self._last_down_step < c.down_step_interval_s - 1e-9:
            return current, f"hold at {current}: next down step not due"
        target = max(n for _, n in self._down)
        step = max(1, math.floor(current * c.down_step_fraction))
        self._last_down_step = now
        want = max(target, current - step)
        return want, f"down to {want} (target {target} held {window:.0f}s)"

    def _learn_capacity(self, obs: Observation) -> None:
        c = self.config
        ready = obs.ready_replicas
        backlogged = (obs.queue_depth or 0.0) >= c.saturation_queue_per_replica * max(ready, 1)
        # Saturated over the whole interval: a backlog at both of its ends. One instant's
        # queue passes the mark by chance below saturation (with batches of 8, one full
        # batch waiting at 80% load); completions there are the arrival rate, and each
        # such tick pulled capacity down toward it (a live run learnt 76 req/s from five
        # of them at 72-98% load, its simulation 79.6 from one: another threshold).
        sustained, self._backlogged = backlogged and self._backlogged, backlogged
        if not c.learn_capacity or ready <= 0 or obs.completion_rate is None or not sustained:
            return
        sample = obs.completion_rate / ready
        lo, hi = 0.25 * c.capacity_per_replica, 4.0 * c.capacity_per_replica
        self.capacity = min(
            max(self.capacity + c.capacity_alpha * (sample - self.capacity), lo), hi
        )


def _ceil(x: float) -> int:
    return math.ceil(x - 1e-9)
