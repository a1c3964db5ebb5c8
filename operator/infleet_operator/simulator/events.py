"""The discrete-event driver every fleet model runs on.

An event is a time, a handler and its payload on a heap; a sequence number keeps
events of one instant in the order they were scheduled, so a run is a pure function
of its inputs and seed. The driver owns what every fleet has: the autoscaler's
decisions on a grid (the first at a phase, then every tick), metric scrapes (on
their own interval, or at each decision), pod starts, and, for a model that takes
requests one at a time, their arrivals merged in from a sorted array. What happens
inside a replica and how its metrics read is the model's (:class:`FleetModel`).
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar

from infleet_operator.autoscaling import Observation
from infleet_operator.autoscaling.spec import ControlLoop
from infleet_operator.simulator.pods import Pod, PodStarts, live_counts
from infleet_operator.simulator.result import DecisionLog

Handler = Callable[[Any, float], None]  # (payload, now)
P = TypeVar("P", bound=Pod)


class EventQueue:
    """The clock: events by time, then by the order they were pushed."""

    __slots__ = ("heap", "seq")

    def __init__(self) -> None:
        self.heap: list[tuple[float, int, Handler, Any]] = []
        self.seq = 0

    def push(self, t: float, handler: Handler, payload: Any = None) -> None:
        self.seq += 1
        heapq.heappush(self.heap, (t, self.seq, handler, payload))


@dataclass(frozen=True)
class Timing:
    """When the autoscaler decides and when metrics are read."""

    tick_s: float
    scrape_interval_s: float
    scrape_at_tick: bool  # the operator's pod mode: scrape at each decision, no lag
    tick_phase_s: float | None = None  # first decision (then every tick_s); None: at tick_s

    @property
    def first_tick(self) -> float:
        return self.tick_s if self.tick_phase_s is None else self.tick_phase_s


@dataclass(frozen=True)
class Arrivals:
    """Requests fed to a model one at a time: sorted times, and who takes each (index, now).

    An arrival goes before events at a later time and after those at the same time.
    """

    times: Sequence[float]
    take: Callable[[int, float], None]


NO_ARRIVALS = Arrivals((), lambda i, now: None)


class FleetModel(Protocol[P]):
    """A fleet the driver can run: it makes pods, serves, and reports metrics."""

    @property
    def pods(self) -> Sequence[P]: ...

    def new_pod(self, now: float) -> P:
        """A pod created now (starting), added to ``pods``."""

    def ready(self, pod: P, now: float) -> None:
        """A pod finished starting (it may have been scaled away meanwhile)."""

    def scrape(self, now: float) -> None:
        """Read the fleet's metrics now, as the operator's scrape would."""

    def observe(self, now: float, current: int, ready: int) -> Observation:
        """What the autoscaler sees at a decision now."""

    def scale_down(self, k: int, now: float) -> None:
        """Remove ``k`` of the live pods, as a ReplicaSet would."""


class Driver(Generic[P]):
    """Runs a fleet model under a control loop until the trace ends and the queue drains."""

    def __init__(
        self,
        model: FleetModel[P],
        loop: ControlLoop,
        timing: Timing,
        starts: PodStarts,
        end: float,
    ) -> None:
        self.model, self.loop, self.timing, self.starts, self.end = model, loop, timing, starts, end
        self.events = EventQueue()
        self.log = DecisionLog()
        self._progress: Callable[[float], None] | None = None
        self._next_progress = end / 10

    def run(
        self,
        initial: int,
        arrivals: Arrivals | None = None,
        progress: Callable[[float], None] | None = None,
    ) -> None:
        """``initial`` pods Ready at 0, then events in order; ``progress`` every tenth."""
        m, timing = self.model, self.timing
        for _ in range(initial):
            m.ready(m.new_pod(-self.starts.delay_s), 0.0)
        tick0 = timing.first_tick
        if timing.scrape_at_tick:
            m.scrape(tick0 - timing.tick_s)  # the decision before the first one scraped too
        else:
            self.events.push(0.0, self._scrape)
        self.events.push(tick0, self._tick)
        self._progress = progress
        heap, pop = self.events.heap, heapq.heappop
        feed = arrivals or NO_ARRIVALS
        times, take = feed.times, feed.take
        i, n = 0, len(times)
        while heap or i < n:
            if i < n and (not heap or times[i] < heap[0][0]):
                take(i, times[i])
                i += 1
                continue
            t, _, handler, payload = pop(heap)
            handler(payload, t)

    def _scrape(self, _: None, now: float) -> None:
        self.model.scrape(now)
        interval = self.timing.scrape_interval_s
        if now + interval <= self.end:
            self.events.push(now + interval, self._scrape)

    def _tick(self, _: None, now: float) -> None:
        self._decide(now)
        if now + self.timing.tick_s <= self.end:
            self.events.push(now + self.timing.tick_s, self._tick)
        if self._progress is not None and now >= self._next_progress:
            self._progress(now / self.end)
            self._next_progress += self.end / 10

    def _decide(self, now: float) -> None:
        m = self.model
        if self.timing.scrape_at_tick:
            m.scrape(now)
        current, ready = live_counts(m.pods)
        obs = m.observe(now, current, ready)
        d, plan = self.loop.step(obs)
        self.log.record(now, obs, d, plan)
        if not plan.changed:
            return
        if plan.replicas > current:
            for _ in range(plan.replicas - current):
                self.events.push(now + self.starts.next(), m.ready, m.new_pod(now))
        else:
            m.scale_down(current - plan.replicas, now)
