"""A fleet of generating replicas under the operator's autoscaler (discrete events).

Events are engine steps (runs of equal decode steps taken at once), arrivals, pod
starts, scrapes and decisions. Requests go to the serving replica with the fewest
sequences (least-queue) or in turn (round-robin); a scaled-down replica takes no new
request and leaves once it has finished the ones it holds (it never cuts a stream).
The autoscaler sees what a worker exports (waiting and running sequences, KV blocks
in use, generated tokens, finished sequences) through the same token signal the
operator uses (:mod:`infleet_operator.autoscaling.tokens`).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infleet_operator.autoscaling import Observation
from infleet_operator.autoscaling.spec import ControlLoop
from infleet_operator.autoscaling.tokens import TokenLoad, TokenSignal
from infleet_operator.simulator.gen_profile import GenerateProfile
from infleet_operator.simulator.gen_replica import EngineLimits, GenReplica, Record, Seq
from infleet_operator.simulator.gen_report import gen_stats
from infleet_operator.simulator.result import TICK_COLUMNS, SimResult
from infleet_operator.simulator.traces import Trace

STEP, READY, SCRAPE, TICK = range(4)
STARTING, SERVING, DRAINING, GONE = range(4)


@dataclass(frozen=True)
class GenFleetConfig:
    profile: GenerateProfile = field(default_factory=GenerateProfile)
    limits: EngineLimits = field(default_factory=EngineLimits)
    prompt_tokens: int = 128  # per request when the trace does not say
    output_tokens: int = 128
    tokens: TokenSignal = field(default_factory=TokenSignal)
    lb: str = "least-queue"  # or "round-robin"
    start_delay_s: float = 120.0
    start_jitter: float = 0.2
    tick_s: float = 15.0
    scrape_interval_s: float = 15.0
    scrape_at_tick: bool = True
    initial_replicas: int = 0  # 0: the autoscaler's minimum
    seed: int = 0


class _Pod:
    __slots__ = ("created", "end", "engine", "state", "version")

    def __init__(self, engine: GenReplica, created: float) -> None:
        self.engine, self.created, self.end = engine, created, math.inf
        self.state, self.version = STARTING, 0


class GenFleetSim:
    def __init__(self, trace: Trace, loop: ControlLoop, cfg: GenFleetConfig) -> None:
        if cfg.lb not in ("least-queue", "round-robin"):
            raise ValueError(f"unknown load balancer {cfg.lb!r}")
        self.trace, self.loop, self.cfg = trace, loop, cfg
        n = len(trace.arrivals)
        self.arr = trace.arrivals
        self.prompt = _tokens(trace.prompt_tokens, n, cfg.prompt_tokens)
        self.output = _tokens(trace.output_tokens, n, cfg.output_tokens)
        nan = np.full(n, np.nan)
        self.rec = Record(self.arr, nan.copy(), nan.copy())
        self.pods: list[_Pod] = []
        self.heap: list[tuple[float, int, int, Any]] = []
        self.seq = self.rr = 0
        self.lost: list[int] = []  # met no serving replica
        self.rng = np.random.default_rng(cfg.seed)
        self.snaps: list[tuple[float, ...]] = []
        self.tick_rows: list[tuple[float, ...]] = []
        self.reasons: list[tuple[float, int, int, str]] = []
        self.actions = self.limited = 0

    def _push(self, t: float, kind: int, obj: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, kind, obj))

    def run(self) -> SimResult:
        c, end, arr = self.cfg, self.trace.duration, self.arr.tolist()
        bounds = self.loop.policy.bounds
        start = min(max(c.initial_replicas, bounds.min_replicas), bounds.max_replicas)
        for _ in range(max(start, 1)):
            self._ready(self._new_pod(-c.start_delay_s), 0.0)
        if c.scrape_at_tick:
            self._scrape(0.0)
        else:
            self._push(0.0, SCRAPE)
        self._push(c.tick_s, TICK)
        i, n = 0, len(arr)
        while self.heap or i < n:
            if i < n and (not self.heap or arr[i] < self.heap[0][0]):
                self._arrive(i, arr[i])
                i += 1
                continue
            t, _, kind, obj = heapq.heappop(self.heap)
            if kind == STEP:
                pod, version = obj
                if version == pod.version:
                    self._stepped(pod, t)
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
        return self._result()

    # -- requests and steps ----------------------------------------------------------
    def _arrive(self, rid: int, now: float) -> None:
        serving = [p for p in self.pods if p.state == SERVING]
        if not serving:
            self.lost.append(rid)
            return
        if self.cfg.lb == "least-queue":
            pod = min(serving, key=lambda p: p.engine.load)
        else:
            pod = serving[self.rr % len(serving)]
            self.rr += 1
        e = pod.engine
        e.waiting.append(Seq(rid, int(self.prompt[rid]), int(self.output[rid])))
        if not e.busy:
            self._schedule(pod, e.plan(now))
        elif e.k > 1:
            self._schedule(pod, e.cut(now))

    def _schedule(self, pod: _Pod, at: float) -> None:
        pod.version += 1
        if at < math.inf:
            self._push(at, STEP, (pod, pod.version))

    def _stepped(self, pod: _Pod, now: float) -> None:
        e = pod.engine
        e.apply()
        self._schedule(pod, e.plan(now))
        if pod.state == DRAINING and not e.busy:
            self.lost.extend(s.rid for s in e.drop_all())  # only ones that cannot run
            pod.state, pod.end = GONE, now

    # -- replicas --------------------------------------------------------------------
    def _new_pod(self, now: float) -> _Pod:
        pod = _Pod(GenReplica(self.cfg.profile, self.cfg.limits, self.rec), now)
        self.pods.append(pod)
        return pod

    def _ready(self, pod: _Pod, now: float) -> None:
        if pod.state == STARTING:
            pod.state = SERVING

    def _scale(self, want: int, current: int, now: float) -> None:
        if want > current:
            for _ in range(want - current):
                jitter = 1.0 + self.cfg.start_jitter * (2.0 * self.rng.random() - 1.0)
                self._push(now + self.cfg.start_delay_s * jitter, READY, self._new_pod(now))
            return
        live = [p for p in self.pods if p.state in (STARTING, SERVING)]
        live.sort(key=lambda p: (p.state != STARTING, p.engine.load, -p.created))
        for pod in live[: current - want]:
            if pod.state == STARTING or not pod.engine.busy:
                self.lost.extend(s.rid for s in pod.engine.drop_all())
                pod.state, pod.end = GONE, now
            else:
                pod.state = DRAINING

    # -- metrics and decisions ---------------------------------------------------------
    def _scrape(self, now: float) -> None:
        up = [p.engine for p in self.pods if p.state == SERVING]
        tokens = self.rec.tokens + sum(e.tokens_in_flight(now) for e in up)
        arrived = int(np.searchsorted(self.arr, now, side="right"))
        self.snaps.append(
            (
                now,
                arrived,
                tokens,
                self.rec.finished,
                sum(len(e.waiting) for e in up),
                sum(len(e.running) for e in up),
                sum(e.kv_used() for e in up),
                sum(e.blocks for e in up),
            )
        )
        del self.snaps[:-2]

    def _tick(self, now: float) -> None:
        if self.cfg.scrape_at_tick:
            self._scrape(now)
        current = sum(1 for p in self.pods if p.state in (STARTING, SERVING))
        ready = sum(1 for p in self.pods if p.state == SERVING)
        if len(self.snaps) < 2:
            obs = Observation(now, current, ready, missing=True)
        else:
            (t0, a0, k0, _, _, _, _, _), (t1, a1, k1, f1, w, r, used, blocks) = self.snaps
            dt = t1 - t0
            per_seq = k1 / f1 if f1 else None
            load = TokenLoad(w, r, used, blocks, (a1 - a0) / dt, (k1 - k0) / dt, per_seq)
            obs = self.cfg.tokens.observation(now, current, ready, load)
        d, plan = self.loop.step(obs)
        nan = math.nan
        self.tick_rows.append(
            (
                now,
                obs.arrival_rate if obs.arrival_rate is not None else nan,
                current,
                ready,
                plan.replicas,
                d.forecast_rate if d.forecast_rate is not None else nan,
                obs.completion_rate if obs.completion_rate is not None else nan,
            )
        )
        self.limited += d.limited_by is not None
        if plan.changed:
            self.actions += 1
            self.reasons.append((now, current, plan.replicas, plan.reason))
            self._scale(plan.replicas, current, now)

    def _result(self) -> SimResult:
        end, rec = self.trace.duration, self.rec
        seconds = sum(max(0.0, min(p.end, end) - max(p.created, 0.0)) for p in self.pods)
        ticks = np.asarray(self.tick_rows, dtype=np.float64).reshape(-1, len(TICK_COLUMNS))
        return SimResult(
            arrivals=self.arr,
            latency=rec.first_token - self.arr,  # time to first token
            duration=end,
            replica_seconds=seconds,
            scale_actions=self.actions,
            ticks=ticks,
            limited_ticks=self.limited,
            completed=rec.finished,
            timed_out=len(rec.expired) + len(self.lost),
            reasons=self.reasons,
            generation=gen_stats(self.arr, rec.first_token, rec.finish, rec.itl, rec.tokens),
        )


def _tokens(column: np.ndarray | None, n: int, default: int) -> np.ndarray:
    return np.asarray(column, dtype=np.int64) if column is not None else np.full(n, default)


def simulate_generation(trace: Trace, loop: ControlLoop, cfg: GenFleetConfig) -> SimResult:
    return GenFleetSim(trace, loop, cfg).run()
