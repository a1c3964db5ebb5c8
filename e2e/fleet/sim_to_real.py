"""Sim-to-real: replay a live autoscaling run's arrivals through the simulator and compare.

The live run records its offered load (each request's send time) and the
operator's decisions (status.autoscaler: each scale's history entry and every
lastDecision seen, stamped to the millisecond when its counters were read);
the simulator replays the same arrivals through the same manifest,
with the profile measured in the same run (batch service times from a worker's
statistics, the forecast lead from status.podStartSeconds), the operator's
decision phase (its timer decides on a fixed grid; the simulator ticks on that
grid), each new pod's start as it happened (decision -> taking traffic) and
the traffic's load balancing (round robin: a queue per pod).
Compared, both sides the same event, the desired replica count written at a
decision: replica-seconds, peak replicas, and when each count was first asked
for on the way up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from infleet_operator.simulator.fleet_config import FleetConfig
from infleet_operator.simulator.manifest import validated
from infleet_operator.simulator.profile import Profile
from infleet_operator.simulator.rehearse import Slo, rehearse
from infleet_operator.simulator.result import SimResult
from infleet_operator.simulator.traces import Trace


@dataclass(frozen=True)
class Track:
    """The replicas the autoscaler asked for: a step series from t=0 (traffic start)."""

    t: np.ndarray
    desired: np.ndarray
    end: float

    def replica_seconds(self) -> float:
        edges = np.append(np.clip(self.t, 0.0, self.end), self.end)
        return float((np.diff(edges) * self.desired).sum())

    def first_reached(self) -> dict[int, float]:
        """Replica count -> when the autoscaler first asked for at least that many."""
        out: dict[int, float] = {}
        for t, d in zip(self.t, self.desired, strict=True):
            for k in range(int(self.desired[0]) + 1, int(d) + 1):
                out.setdefault(k, float(t))
        return out


@dataclass(frozen=True)
class Comparison:
    real_replica_seconds: float
    sim_replica_seconds: float
    real_peak: int
    sim_peak: int
    scale_ups: dict[int, tuple[float | None, float | None]] = field(default_factory=dict)

    @property
    def cost_error(self) -> float:
        return abs(self.sim_replica_seconds - self.real_replica_seconds) / self.real_replica_seconds

    def worst_scale_up_gap(self) -> float:
        """Largest gap between real and simulated times of reaching a count both reached."""
        gaps = [abs(a - b) for a, b in self.scale_ups.values() if a is not None and b is not None]
        return max(gaps, default=0.0)

    def report(self) -> str:
        signed = self.sim_replica_seconds / self.real_replica_seconds - 1
        lines = [
            f"replica-seconds real {self.real_replica_seconds:.0f} sim "
            f"{self.sim_replica_seconds:.0f} (sim {signed:+.1%})",
            f"peak replicas real {self.real_peak} sim {self.sim_peak}",
        ]
        for k, (a, b) in sorted(self.scale_ups.items()):
            gap = f" (gap {abs(a - b):.1f}s)" if a is not None and b is not None else ""
            lines.append(f"  first asked for {k}: real t={_t(a)} sim t={_t(b)}{gap}")
        return "\n".join(lines)


def _t(x: float | None) -> str:
    return "never" if x is None else f"{x:.1f}s"


def stamp_seconds(stamp: str, wall_at_t0: float) -> float:
    """An operator timestamp (RFC 3339, UTC) as seconds since traffic started."""
    when = dt.datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    return when.timestamp() - wall_at_t0


def real_track(history: list[dict[str, Any]], wall_at_t0: float, initial: int, end: float) -> Track:
    """The operator's scale decisions (status.autoscaler.history) as a step series."""
    times = [stamp_seconds(h["time"], wall_at_t0) for h in history]
    desired = [float(initial), *(float(h["toReplicas"]) for h in history)]
    return Track(np.array([0.0, *times]), np.array(desired), end)


def start_delays(
    history: list[dict[str, Any]], wall_at_t0: float, serving: list[tuple[float, int]]
) -> tuple[float, ...]:
    """Scale decision -> the new pod taking traffic, for each pod the scale-ups asked for.

    Not status.podStartSeconds (pod created -> Ready, to the second): the
    controllers' lag before the pod exists and the endpoints' after it is Ready
    count too, and they vary (4-10 s in one run where podStartSeconds said 2-4 s).
    """
    out: list[float] = []
    for h in history:
        if h["toReplicas"] <= h["fromReplicas"]:
            continue
        at = stamp_seconds(h["time"], wall_at_t0)
        for k in range(int(h["fromReplicas"]) + 1, int(h["toReplicas"]) + 1):
            up = next((t for t, n in serving if t >= at and n >= k), None)
            if up is None:
                return tuple(out)
            out.append(up - at)
    return tuple(out)


def decision_phase(instants: Iterable[float], period: float) -> float:
    """When, in (0, period], the operator's first decision after traffic start fell.

    The circular mean of the decision instants modulo the period: the timer
    decides on a fixed grid, each decision within a wake's jitter of it.
    """
    angles = np.array([2 * np.pi * (t % period) / period for t in instants])
    if not len(angles):
        raise ValueError("no decision instants recorded")
    mean = float(np.angle(np.exp(1j * angles).mean()))
    phase = (mean % (2 * np.pi)) / (2 * np.pi) * period
    return phase if phase > 1e-9 else period


def sim_track(result: SimResult, initial: int) -> Track:
    t = np.concatenate([[0.0], result.ticks[:, 0]])
    desired = np.concatenate([[float(initial)], result.ticks[:, 4]])
    return Track(t, desired, result.duration)


def compare(real: Track, sim: Track) -> Comparison:
    a, b = real.first_reached(), sim.first_reached()
    return Comparison(
        real.replica_seconds(),
        sim.replica_seconds(),
        int(real.desired.max()),
        int(sim.desired.max()),
        {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b))},
    )


def live_trace(send_times: Sequence[float], duration: float) -> Trace:
    """The run's own arrivals: each request's send time, seconds since traffic started."""
    arrivals = np.sort(np.asarray(send_times, dtype=np.float64))
    arrivals = arrivals[(arrivals >= 0) & (arrivals < duration)]
    rate = np.bincount(arrivals.astype(np.int64), minlength=int(duration))[: int(duration)]
    return Trace("live", arrivals, rate.astype(np.float64), duration)


def replay(
    name: str, spec: dict[str, Any], send_times: Sequence[float], duration: float,
    profile: Profile, initial: int, phase: float, delays: tuple[float, ...] = (), seed: int = 0,
) -> SimResult:  # fmt: skip
    """The simulator's run of the same manifest on the same arrivals, clock and pod starts."""
    base = replace(
        FleetConfig(seed=seed),
        lb="round-robin",  # FleetTraffic's: each pod its own queue, as the workers have
        initial_replicas=initial,
        start_jitter=0.0,
        start_delays=delays,
        tick_phase_s=phase,
    )
    trace = live_trace(send_times, duration)
    return rehearse(validated(name, spec), trace, profile, base, Slo()).result
