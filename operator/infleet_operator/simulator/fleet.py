"""Discrete-event fleet simulation: events are batches, pod starts, scrapes, ticks.

Requests are not events. Arrivals are a sorted array known up front, so a
replica that frees up computes when its next batch starts (oldest request +
max queue delay, or the moment the batch fills) and how many it takes with a
bisect. Cost per simulated day is the number of batches, not requests.
"""

from __future__ import annotations

import heapq
import math
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable
from typing import Any

import numpy as np

from infleet_operator.autoscaling import Observation
from infleet_operator.autoscaling.spec import ControlLoop
from infleet_operator.simulator.fleet_config import FleetConfig
from infleet_operator.simulator.result import TICK_COLUMNS, SimResult
from infleet_operator.simulator.service import service_times
from infleet_operator.simulator.shedding import Shedder, assign_priorities
from infleet_operator.simulator.streams import Stream, expand
from infleet_operator.simulator.traces import Trace

DONE, READY, DISPATCH, SCRAPE, TICK = range(5)
STARTING, SERVING, DRAINING, GONE = range(4)
INF = math.inf


class _Replica:
    __slots__ = ("batcher", "busy", "created", "end", "rid", "state")

    def __init__(self, rid: int, created: float) -> None:
        self.rid, self.created, self.end = rid, created, INF
        self.state, self.busy = STARTING, 0
        self.batcher: _Batcher | None = None


class _Batcher:
    """A queue (stream) and the idle replicas that draw batches from it."""

    __slots__ = ("idle", "stream", "version")

    def __init__(self) -> None:
        self.stream, self.idle, self.version = Stream(), list[_Replica](), 0


class FleetSim:
    def __init__(self, trace: Trace, loop: ControlLoop, config: FleetConfig | None = None) -> None:
        self.cfg = c = config or FleetConfig()
        if c.lb not in ("least-queue", "round-robin"):
            raise ValueError(f"unknown load balancer {c.lb!r}")
        self.trace, self.loop = trace, loop
        self.arr: list[float] = trace.arrivals.tolist()
        self.n = len(self.arr)
        self.svc = service_times(c.service_table, max(c.max_batch, c.overload_max_batch))
        self.n_serving = 0
        self.priorities = (
            assign_priorities(self.n, c.priority_shares, c.seed) if c.priority_shares else None
        )
        self.shedder: Shedder | None = None
        if c.shed_queue_per_replica > 0 and self.priorities is not None:
            if c.lb != "least-queue":
                raise ValueError("priority shedding is modelled for lb least-queue only")
            self.shedder = Shedder(self.priorities, c.shed_queue_per_replica)
        self.rng = np.random.default_rng(c.seed)
        self.heap: list[tuple[float, int, int, Any]] = []
        self.seq = 0
        self.replicas: list[_Replica] = []
        self.shared = _Batcher() if c.lb == "least-queue" else None
        if self.shared is not None:
            self.shared.stream.add(0, self.n, 1)
        self.batches: list[list[int]] = [[], [], []]
        self.batch_done: list[float] = []
        self.drops: list[list[int]] = [[], [], []]
        self.inflight = self.completed = 0
        self.snaps: deque[tuple[float, int, int, int, int]] = deque()
        self.tick_rows: list[tuple[float, ...]] = []
        self.reasons: list[tuple[float, int, int, str]] = []
        self.scale_actions = self.limited_ticks = 0
        self._orphan_from: int | None = None  # round-robin with no serving replica
        self._started = 0  # pods created by scale-ups (start_delays replayed so far)

    # -- event plumbing ---------------------------------------------------------
    def _push(self, t: float, kind: int, obj: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, obj))

    def run(self, progress: Callable[[float], None] | None = None) -> SimResult:
        c, end = self.cfg, self.trace.duration
        first = self.trace.rate[:60].mean() if len(self.trace.rate) else 0.0
        cap = c.max_batch / self.svc[c.max_batch]
        start = c.initial_replicas or max(1, math.ceil(first / (0.7 * cap)))
        bounds = self.loop.policy.bounds
        start = min(max(start, bounds.min_replicas), bounds.max_replicas)
        for _ in range(start):
            self._ready(self._new_replica(-c.start_delay_s), 0.0)
        tick0 = c.tick_s if c.tick_phase_s is None else c.tick_phase_s
        if c.scrape_at_tick:
            self._scrape(tick0 - c.tick_s)  # the decision before the first one scraped too
        else:
            self._push(0.0, SCRAPE)
        self._push(tick0, TICK)
        next_progress = end / 10
        heap, pop = self.heap, heapq.heappop
        while heap:
            t, _, kind, obj = pop(heap)
            if kind == DONE:
                self._done(obj, t)
            elif kind == DISPATCH:
                b, version = obj
                if version == b.version:
                    self._kick(b, t)
            elif kind == READY:
                self._ready(obj, t)
            elif kind == SCRAPE:
                self._scrape(t)
                if t + c.scrape_interval_s <= end:
                    self._push(t + c.scrape_interval_s, SCRAPE)
            else:
                self._tick(t)
                if t + c.tick_s <= end:
                    self._push(t + c.tick_s, TICK)
                if progress is not None and t >= next_progress:
                    progress(t / end)
                    next_progress += end / 10
        return self._result()

    # -- replicas ---------------------------------------------------------------
    def _new_replica(self, now: float) -> _Replica:
        r = _Replica(len(self.replicas), now)
        self.replicas.append(r)
        return r

    def _ready(self, r: _Replica, now: float) -> None:
        if r.state != STARTING:
            return
        r.state = SERVING
        self.n_serving += 1
        if self.shared is not None:
            r.batcher = self.shared
            self.shared.idle.append(r)
            self._kick(self.shared, now)
        else:
            r.batcher = _Batcher()
            r.batcher.idle.append(r)
            self._rebalance(now)

    def _drop_range(self, start: int, stop: int) -> None:
        if stop > start:
            self.drops[0].append(start)
            self.drops[1].append(stop - start)
            self.drops[2].append(1)

    def _retire(self, r: _Replica, now: float) -> None:
        r.state, r.end = GONE, now

    def _rebalance(self, now: float) -> None:
        """Round-robin: start a new epoch of stride-n segments over serving replicas."""
        g = bisect_right(self.arr, now)
        serving = [r for r in self.replicas if r.state == SERVING]
        for r in self.replicas:
            if r.batcher is not None and r.state in (SERVING, DRAINING):
                r.batcher.stream.close(g)
        for k, r in enumerate(serving):
            assert r.batcher is not None
            r.batcher.stream.add(g + k, self.n, len(serving))
        if self._orphan_from is not None:  # requests that met no endpoint fail
            self._drop_range(self._orphan_from, g)
            self._orphan_from = None
        if not serving:
            self._orphan_from = g
        for r in self.replicas:
            if r.batcher is not None and r.state in (SERVING, DRAINING) and not r.busy:
                self._kick(r.batcher, now)

    # -- batching -----------------------------------------------------------------
    def _plan(self, s: Stream, now: float) -> float:
        """When the next batch of this stream starts (max queue delay or full batch)."""
        i0 = s.nth(0, self.n)
        if i0 < 0:
            return INF
        t = self.arr[i0] + self.cfg.max_queue_delay_s
        ib = s.nth(self.cfg.max_batch - 1, self.n)
        if ib >= 0 and self.arr[ib] < t:
            t = self.arr[ib]
        return t if t > now else now

    def _kick(self, b: _Batcher, now: float) -> None:
        if b is self.shared:
            self._kick_shared(b, now)
            return
        b.version += 1
        while b.idle:
            at = self._plan(b.stream, now)
            if at == INF:
                break
            if at > now:
                self._push(at, DISPATCH, (b, b.version))
                return
            r = b.idle.pop()
            if not self._start(r, b.stream, now):
                b.idle.append(r)
        for r in list(b.idle):  # draining replicas with nothing left leave
            if r.state == DRAINING and (self.shared is not None or b.stream.exhausted(self.n)):
                b.idle.remove(r)
                self._retire(r, now)

    def _kick_shared(self, b: _Batcher, now: float) -> None:
        """`_kick` for the one stride-1 shared queue, inlined: the hot loop of least-queue."""
        b.version += 1
        idle, arr, n, seg = b.idle, self.arr, self.n, b.stream.segs[0]
        c = self.cfg
        delay, full, timeout = c.max_queue_delay_s, c.max_batch, c.request_timeout_s
        starts, counts, strides = self.batches
        boost = c.overload_max_batch > c.max_batch
        shed = self.shedder
        while idle:
            head = seg[0]
            if shed is not None and head < n:
                shed.admit(arr, now, head, self.n_serving)
                head = seg[0] = shed.skip(head)
            if head >= n:
                return
            if boost:
                waiting = bisect_right(arr, now, head) - head
                over = waiting > c.overload_queue_per_replica * max(self.n_serving, 1)
                full = c.overload_max_batch if over else c.max_batch
                delay = c.overload_queue_delay_s if over else c.max_queue_delay_s
            at = arr[head] + delay
            j = head + full - 1
            if j < n and arr[j] < at:
                at = arr[j]
            if at > now:
                self.seq += 1
                heapq.heappush(self.heap, (at, self.seq, DISPATCH, (b, b.version)))
                return
            if arr[head] < now - timeout:
                cut = bisect_left(arr, now - timeout, head)
                self._drop_range(head, cut)
                seg[0] = head = cut
                if head >= n or arr[head] > now:
                    continue
            if shed is not None:
                size, seg[0] = shed.take(head, bisect_right(arr, now, head), full, self.batches)
                if not size:
                    continue
                done = now + self.svc[size]
                self.batch_done.extend([done] * (len(starts) - len(self.batch_done)))
            else:
                g = bisect_right(arr, now, head, min(n, head + full))
                size = g - head
                seg[0] = g
                starts.append(head)
                counts.append(size)
                strides.append(1)
                done = now + self.svc[size]
                self.batch_done.append(done)
            r = idle.pop()
            r.busy = size
            self.inflight += size
            self.seq += 1
            heapq.heappush(self.heap, (done, self.seq, DONE, r))

    def _start(self, r: _Replica, s: Stream, now: float) -> bool:
        arr = self.arr
        i0 = s.nth(0, self.n)
        cutoff = now - self.cfg.request_timeout_s
        if arr[i0] < cutoff:
            s.take(self.n, bisect_left(arr, cutoff, i0), self.drops)
            i0 = s.nth(0, self.n)
            if i0 < 0 or arr[i0] > now:
                return False
        g = bisect_right(arr, now, i0)
        size = s.take(self.cfg.max_batch, g, self.batches)
        if not size:
            return False
        done = now + self.svc[size]
        self.batch_done.extend([done] * (len(self.batches[0]) - len(self.batch_done)))
        r.busy = size
        self.inflight += size
        self._push(done, DONE, r)
        return True

    def _done(self, r: _Replica, now: float) -> None:
        self.inflight -= r.busy
        self.completed += r.busy
        r.busy = 0
        b = r.batcher
        assert b is not None
        if r.state == DRAINING and self.shared is not None:
            self._retire(r, now)
            return
        b.idle.append(r)
        self._kick(b, now)

    # -- metrics and autoscaling ---------------------------------------------------
    def _waiting(self, g: int) -> int:
        if self.shared is not None:
            waiting = self.shared.stream.count_before(g)
            if self.shedder is not None:
                waiting -= self.shedder.pending(self.shared.stream.segs[0][0])
            return waiting
        return sum(
            r.batcher.stream.count_before(g)
            for r in self.replicas
            if r.batcher is not None and r.state in (SERVING, DRAINING)
        )

    def _scrape(self, now: float) -> None:
        g = bisect_right(self.arr, now)
        self.snaps.append((now, g, self.completed, self._waiting(g), self.inflight))

    def _observe(self, now: float) -> Observation:
        snaps, lag = self.snaps, self.cfg.metric_lag_s
        while len(snaps) > 2 and snaps[2][0] <= now - lag:
            snaps.popleft()
        current = sum(1 for r in self.replicas if r.state in (STARTING, SERVING))
        ready = sum(1 for r in self.replicas if r.state == SERVING)
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

    def _tick(self, now: float) -> None:
        if self.cfg.scrape_at_tick:
            self._scrape(now)
        obs = self._observe(now)
        d, plan = self.loop.step(obs)
        current = obs.current_replicas
        nan = math.nan
        rate = obs.arrival_rate if obs.arrival_rate is not None else nan
        served = obs.completion_rate if obs.completion_rate is not None else nan
        forecast = d.forecast_rate if d.forecast_rate is not None else nan
        self.tick_rows.append(
            (now, rate, current, obs.ready_replicas, plan.replicas, forecast, served)
        )
        if d.limited_by is not None:
            self.limited_ticks += 1
        if not plan.changed:
            return
        self.scale_actions += 1
        self.reasons.append((now, current, plan.replicas, plan.reason))
        if plan.replicas > current:
            for _ in range(plan.replicas - current):
                self._push(now + self._start_delay(), READY, self._new_replica(now))
        else:
            self._scale_down(current - plan.replicas, now)

    def _start_delay(self) -> float:
        c = self.cfg
        if self._started < len(c.start_delays):
            self._started += 1
            return c.start_delays[self._started - 1]
        return c.start_delay_s * (1.0 + c.start_jitter * (2.0 * self.rng.random() - 1.0))

    def _scale_down(self, k: int, now: float) -> None:
        """Like a ReplicaSet: unready pods first (newest first), then idle, then busy."""
        live = [r for r in self.replicas if r.state in (STARTING, SERVING)]
        live.sort(key=lambda r: (r.state != STARTING, r.busy > 0, -r.created))
        rr = False
        for r in live[:k]:
            if r.state == STARTING:
                self._retire(r, now)
                continue
            r.state = DRAINING
            self.n_serving -= 1
            b = r.batcher
            assert b is not None
            if self.shared is not None:
                if r in b.idle:
                    b.idle.remove(r)
                    self._retire(r, now)
            else:
                rr = True
        if rr:
            self._rebalance(now)

    # -- results --------------------------------------------------------------------
    def _result(self) -> SimResult:
        end = self.trace.duration
        arrivals = self.trace.arrivals
        if self._orphan_from is not None:
            self._drop_range(self._orphan_from, self.n)
        done = np.full(self.n, np.nan)
        idx = expand(self.batches)
        counts = np.asarray(self.batches[1], dtype=np.int64)
        done[idx] = np.repeat(np.asarray(self.batch_done), counts)
        latency = done - arrivals
        seconds = 0.0
        for r in self.replicas:
            seconds += max(0.0, min(r.end, end) - max(r.created, 0.0))
        ticks = np.asarray(self.tick_rows, dtype=np.float64).reshape(-1, len(TICK_COLUMNS))
        dropped = expand(self.drops)
        refused = self.shedder.mask() if self.shedder is not None else None
        timed_out = len(dropped) - (int(refused[dropped].sum()) if refused is not None else 0)
        return SimResult(
            arrivals=arrivals,
            latency=latency,
            duration=end,
            replica_seconds=seconds,
            scale_actions=self.scale_actions,
            ticks=ticks,
            limited_ticks=self.limited_ticks,
            completed=len(idx),
            timed_out=timed_out,
            reasons=self.reasons,
            priority=np.asarray(self.priorities, np.int8) if self.priorities else None,
            refused=refused,
        )


def simulate(
    trace: Trace,
    loop: ControlLoop,
    config: FleetConfig | None = None,
    progress: Callable[[float], None] | None = None,
) -> SimResult:
    return FleetSim(trace, loop, config).run(progress)
