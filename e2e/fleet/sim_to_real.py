"""Sim-to-real: replay a live autoscaling run's arrivals through the simulator and compare.

The live run records its offered load (requests sent per second) and the
replicas the autoscaler asked for over time; the simulator replays the same
per-second counts through the same manifest, with the profile measured in
the same run (batch service times from a worker's statistics, pod start from
status.podStartSeconds). Compared: replica-seconds, peak replicas, and the
time the fleet was first asked for each replica count on the way up.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from infleet_operator.simulator.fleet import FleetConfig, SimResult
from infleet_operator.simulator.manifest import validated
from infleet_operator.simulator.profile import Profile
from infleet_operator.simulator.rehearse import Slo, rehearse
from infleet_operator.simulator.traces import Trace, load_counts


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
            lines.append(f"  first asked for {k}: real t={_t(a)} sim t={_t(b)}")
        return "\n".join(lines)


def _t(x: float | None) -> str:
    return "never" if x is None else f"{x:.1f}s"


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


def replay(
    name: str, spec: dict[str, Any], counts: list[int], duration: float, profile: Profile,
    initial: int, seed: int = 0,
) -> SimResult:  # fmt: skip
    """The simulator's run of the same manifest on the same per-second arrivals."""
    trace: Trace = load_counts(np.asarray(counts, dtype=np.float64), duration, name="live")
    base = replace(FleetConfig(seed=seed), initial_replicas=initial, start_jitter=0.0)
    return rehearse(validated(name, spec), trace, profile, base, Slo()).result
