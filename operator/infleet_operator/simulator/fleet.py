"""The encoder fleet: replicas serving batches (:mod:`.batching`) under the autoscaler.

Events (:mod:`.events`) are batches, pod starts, scrapes and decisions. This module
is the fleet's side of them: pods turning Ready or scaled away, the metrics a
scrape reads (arrivals, completions, queue, in flight; with a lag), and the result.
"""

from __future__ import annotations

import math
from bisect import bisect_right
from collections import deque
from collections.abc import Callable

import numpy as np

from infleet_operator.autoscaling import Observation
from infleet_operator.autoscaling.spec import ControlLoop
from infleet_operator.simulator.batching import Batching, Replica
from infleet_operator.simulator.events import Driver, Timing
from infleet_operator.simulator.fleet_config import FleetConfig
from infleet_operator.simulator.pods import DRAINING, SERVING, STARTING, PodStarts, replica_seconds
from infleet_operator.simulator.result import SimResult
from infleet_operator.simulator.traces import Trace


class FleetSim:
    """One run of the encoder fleet over a trace (a :class:`~.events.FleetModel`)."""

    def __init__(self, trace: Trace, loop: ControlLoop, config: FleetConfig | None = None) -> None:
        self.cfg = c = config or FleetConfig()
        if c.lb not in ("least-queue", "round-robin"):
            raise ValueError(f"unknown load balancer {c.lb!r}")
        self.trace, self.loop = trace, loop
        timing = Timing(c.tick_s, c.scrape_interval_s, c.scrape_at_tick, c.tick_phase_s)
        starts = PodStarts(c.start_delay_s, c.start_jitter, c.start_delays, c.seed)
        self.driver = Driver(self, loop, timing, starts, trace.duration)
        self.requests = Batching(trace.arrivals.tolist(), c, self.driver.events)
        self.pods: list[Replica] = []
        self.snaps: deque[tuple[float, int, int, int, int]] = deque()

    def run(self, progress: Callable[[float], None] | None = None) -> SimResult:
        c = self.cfg
        first = self.trace.rate[:60].mean() if len(self.trace.rate) else 0.0
        cap = c.max_batch / self.requests.svc[c.max_batch]
        start = c.initial_replicas or max(1, math.ceil(first / (0.7 * cap)))
        bounds = self.loop.policy.bounds
        start = min(max(start, bounds.min_replicas), bounds.max_replicas)
        self.driver.run(start, progress=progress)
        return self._result()

    # -- pods -----------------------------------------------------------------------------
    def new_pod(self, now: float) -> Replica:
        r = Replica(len(self.pods), now)
        self.pods.append(r)
        return r

    def ready(self, pod: Replica, now: float) -> None:
        if pod.state != STARTING:
            return
        pod.state = SERVING
        self.requests.n_serving += 1
        self.requests.attach(pod, self.pods, now)

    def scale_down(self, k: int, now: float) -> None:
        """Like a ReplicaSet: unready pods first (newest first), then idle, then busy."""
        live = [r for r in self.pods if r.state in (STARTING, SERVING)]
        live.sort(key=lambda r: (r.state != STARTING, r.busy > 0, -r.created))
        rr = False
        for r in live[:k]:
            if r.state == STARTING:
                r.retire(now)
                continue
            r.state = DRAINING
            self.requests.n_serving -= 1
            rr = self.requests.drain(r, now) or rr
        if rr:
            self.requests.rebalance(self.pods, now)

    # -- metrics --------------------------------------------------------------------------
    def scrape(self, now: float) -> None:
        q = self.requests
        g = bisect_right(q.arr, now)
        self.snaps.append((now, g, q.completed, q.waiting(g, self.pods), q.inflight))

    def observe(self, now: float, current: int, ready: int) -> Observation:
        snaps, lag = self.snaps, self.cfg.metric_lag_s
        while len(snaps) > 2 and snaps[2][0] <= now - lag:
            snaps.popleft()
        i = 1 if len(snaps) > 1 and snaps[1][0] <= now - lag else 0
        if i == 0 or len(snaps) < 2:
            return Observation(now, current, ready, missing=True)
        (t0, g0, c0, _, _), (t1, g1, c1, queue, inflight) = snaps[0], snaps[1]
        dt = t1 - t0
        return Observation(
            time=now,
            current_replicas=current,
            ready_replicas=ready,
            queue_depth=float(queue),
            in_flight=float(inflight),
            arrival_rate=(g1 - g0) / dt,
            completion_rate=(c1 - c0) / dt,
        )

    # -- result ---------------------------------------------------------------------------
    def _result(self) -> SimResult:
        end, arrivals, log = self.trace.duration, self.trace.arrivals, self.driver.log
        latency, completed, timed_out, refused = self.requests.outcome(arrivals)
        priorities = self.requests.priorities
        return SimResult(
            arrivals=arrivals,
            latency=latency,
            duration=end,
            replica_seconds=replica_seconds(self.pods, end),
            scale_actions=log.actions,
            ticks=log.ticks(),
            limited_ticks=log.limited,
            completed=completed,
            timed_out=timed_out,
            reasons=log.reasons,
            priority=np.asarray(priorities, np.int8) if priorities else None,
            refused=refused,
        )


def simulate(
    trace: Trace,
    loop: ControlLoop,
    config: FleetConfig | None = None,
    progress: Callable[[float], None] | None = None,
) -> SimResult:
    return FleetSim(trace, loop, config).run(progress)
