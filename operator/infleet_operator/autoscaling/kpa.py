"""Knative Pod Autoscaler (KPA) on concurrency, with Knative's defaults.

Stable window 60 s, panic window 10% of it (6 s), panic threshold 200%,
max scale-up rate 1000, max scale-down rate 2, 2 s tick. Panic mode starts
when the panic-window demand reaches 2x the ready pods; while panicking the
count never goes down, and panic ends once the stable window (60 s) has passed
without re-triggering.
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
class KpaConfig:
    target_concurrency: float = 10.0  # per replica (Knative: containerConcurrency x utilisation)
    stable_window_s: float = 60.0
    panic_window_percent: float = 10.0
    panic_threshold_percent: float = 200.0
    max_scale_up_rate: float = 1000.0
    max_scale_down_rate: float = 2.0
    tick_s: float = 2.0


class KpaPolicy:
    name = "kpa"

    def __init__(self, config: KpaConfig, bounds: Bounds) -> None:
        if config.target_concurrency <= 0:
            raise ValueError("kpa target_concurrency must be > 0")
        self.config, self.bounds = config, bounds
        self._samples: deque[tuple[float, float]] = deque()
        self._panic_since: float | None = None
        self._max_panic_pods = 0
        self._last_tick: float | None = None

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> KpaPolicy:
        return cls(build_config(KpaConfig, params, "target_concurrency"), bounds_from(params))

    @property
    def panicking(self) -> bool:
        return self._panic_since is not None

    def decide(self, obs: Observation) -> Decision:
        c = self.config
        if not obs.has_data:
            return hold(obs, self.bounds, "metrics missing")
        self._samples.append((obs.time, obs.demand(obs.concurrency, c.target_concurrency)))
        while self._samples and self._samples[0][0] <= obs.time - c.stable_window_s:
            self._samples.popleft()
        if self._last_tick is not None and obs.time - self._last_tick < c.tick_s - 1e-9:
            return bounded(obs.current_replicas, self.bounds, "between KPA ticks")
        self._last_tick = obs.time
        return self._evaluate(obs)

    def _evaluate(self, obs: Observation) -> Decision:
        c = self.config
        now = obs.time
        panic_window = c.stable_window_s * c.panic_window_percent / 100.0
        stable = sum(v for _, v in self._samples) / len(self._samples)
        recent = [v for t, v in self._samples if t > now - panic_window] or [self._samples[-1][1]]
        panic = sum(recent) / len(recent)
        ready = max(obs.ready_replicas, 1)
        want_stable = math.ceil(stable / c.target_concurrency - 1e-9)
        want_panic = math.ceil(panic / c.target_concurrency - 1e-9)
        up_limit = math.ceil(c.max_scale_up_rate * ready)
        down_limit = math.floor(ready / c.max_scale_down_rate)
        over = want_panic / ready >= c.panic_threshold_percent / 100.0
        if self._panic_since is None and over:
            self._panic_since, self._max_panic_pods = now, obs.ready_replicas
        elif over:
            self._panic_since = now  # re-arm: panic lasts a stable window past the last trigger
        elif self._panic_since is not None and now - self._panic_since >= c.stable_window_s:
            self._panic_since, self._max_panic_pods = None, 0
        what = "concurrency" if obs.memory_load is None else "sequences (waiting + running)"
        why = f"{what} stable {stable:.1f} / panic {panic:.1f}"
        why += f" vs target {c.target_concurrency:g}"
        want = min(max(want_stable, down_limit), up_limit)
        if self._panic_since is not None:
            want_p = min(max(want_panic, down_limit), up_limit)
            if want_p > self._max_panic_pods:
                self._max_panic_pods = want_p
            want = max(self._max_panic_pods, obs.current_replicas)
            why += f"; PANIC (no scale-down) -> {want}"
        else:
            why += f" -> {want}"
        return bounded(want, self.bounds, why)
