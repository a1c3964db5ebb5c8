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

import math
from dataclasses import dataclass, field

import numpy as np

from infleet_operator.autoscaling import Observation
from infleet_operator.autoscaling.spec import ControlLoop
from infleet_operator.autoscaling.tokens import TokenLoad, TokenSignal
from infleet_operator.simulator.events import Arrivals, Driver, Timing
from infleet_operator.simulator.gen_profile import GenerateProfile
from infleet_operator.simulator.gen_replica import EngineLimits, GenReplica, Record, Seq
from infleet_operator.simulator.gen_report import gen_stats
from infleet_operator.simulator.pods import (
    DRAINING,
    SERVING,
    STARTING,
    Pod,
    PodStarts,
    replica_seconds,
)
from infleet_operator.simulator.result import SimResult
from infleet_operator.simulator.traces import Trace


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


class _Pod(Pod):
    __slots__ = ("engine", "version")

    def __init__(self, engine: GenReplica, created: float) -> None:
        super().__init__(created)
        self.engine, self.version = engine, 0


class GenFleetSim:
    """One run of the generative fleet over a trace (a :class:`~.events.FleetModel`)."""

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
        timing = Timing(cfg.tick_s, cfg.scrape_interval_s, cfg.scrape_at_tick)
        starts = PodStarts(cfg.start_delay_s, cfg.start_jitter, (), cfg.seed)
        self.driver = Driver(self, loop, timing, starts, trace.duration)
        self.events = self.driver.events
        self.rr = 0
        self.lost: list[int] = []  # met no serving replica
        self.snaps: list[tuple[float, ...]] = []
        self._on_step = self._step_due  # bound once, not per event

    def run(self) -> SimResult:
        bounds = self.loop.policy.bounds
        start = min(max(self.cfg.initial_replicas, bounds.min_replicas), bounds.max_replicas)
        self.driver.run(max(start, 1), Arrivals(self.arr.tolist(), self._arrive))
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
            self.events.push(at, self._on_step, (pod, pod.version))

    def _step_due(self, due: tuple[_Pod, int], now: float) -> None:
        pod, version = due
        if version == pod.version:
            self._stepped(pod, now)

    def _stepped(self, pod: _Pod, now: float) -> None:
        e = pod.engine
        e.apply()
        self._schedule(pod, e.plan(now))
        if pod.state == DRAINING and not e.busy:
            self.lost.extend(s.rid for s in e.drop_all())  # only ones that cannot run
            pod.retire(now)

    # -- replicas --------------------------------------------------------------------
    def new_pod(self, now: float) -> _Pod:
        pod = _Pod(GenReplica(self.cfg.profile, self.cfg.limits, self.rec), now)
        self.pods.append(pod)
        return pod

    def ready(self, pod: _Pod, now: float) -> None:
        if pod.state == STARTING:
            pod.state = SERVING

    def scale_down(self, k: int, now: float) -> None:
        """Unready pods first, then the least loaded; a busy one drains (never cuts a stream)."""
        live = [p for p in self.pods if p.state in (STARTING, SERVING)]
        live.sort(key=lambda p: (p.state != STARTING, p.engine.load, -p.created))
        for pod in live[:k]:
            if pod.state == STARTING or not pod.engine.busy:
                self.lost.extend(s.rid for s in pod.engine.drop_all())
                pod.retire(now)
            else:
                pod.state = DRAINING

    # -- metrics and result ------------------------------------------------------------
    def scrape(self, now: float) -> None:
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

    def observe(self, now: float, current: int, ready: int) -> Observation:
        if len(self.snaps) < 2:
            return Observation(now, current, ready, missing=True)
        (t0, a0, k0, _, _, _, _, _), (t1, a1, k1, f1, w, r, used, blocks) = self.snaps
        dt = t1 - t0
        per_seq = k1 / f1 if f1 else None
        load = TokenLoad(w, r, used, blocks, (a1 - a0) / dt, (k1 - k0) / dt, per_seq)
        return self.cfg.tokens.observation(now, current, ready, load)

    def _result(self) -> SimResult:
        end, rec, log = self.trace.duration, self.rec, self.driver.log
        return SimResult(
            arrivals=self.arr,
            latency=rec.first_token - self.arr,  # time to first token
            duration=end,
            replica_seconds=replica_seconds(self.pods, end),
            scale_actions=log.actions,
            ticks=log.ticks(),
            limited_ticks=log.limited,
            completed=rec.finished,
            timed_out=len(rec.expired) + len(self.lost),
            reasons=log.reasons,
            generation=gen_stats(self.arr, rec.first_token, rec.finish, rec.itl, rec.tokens),
        )


def _tokens(column: np.ndarray | None, n: int, default: int) -> np.ndarray:
    return np.asarray(column, dtype=np.int64) if column is not None else np.full(n, default)


def simulate_generation(trace: Trace, loop: ControlLoop, cfg: GenFleetConfig) -> SimResult:
    return GenFleetSim(trace, loop, cfg).run()
