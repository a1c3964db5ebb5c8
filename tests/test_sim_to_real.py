"""The sim-to-real comparison's arithmetic (the live check itself is in e2e/test_autoscaling)."""

from __future__ import annotations

import numpy as np
import pytest

from fleet import scale_run
from fleet.sim_to_real import (
    Track,
    compare,
    decision_phase,
    real_track,
    replay,
    sim_track,
    stamp_seconds,
    start_delays,
)
from fleet.traffic import ramp_schedule
from infleet_operator.simulator.profile import Profile
from infleet_operator.simulator.traces import poisson_arrivals

SPEC = {
    "model": {"name": "synthetic", "source": "builtin://synthetic"},
    "engine": {"device": "cpu"},
    "batching": {"maxBatchSize": 8, "maxQueueDelayMicroseconds": 5000},
    "autoscaling": {
        "enabled": True,
        "minReplicas": 1,
        "maxReplicas": 4,
        "intervalSeconds": 2,
        "scaleDownStabilizationSeconds": 10,
        "predictive": {"capacityPerReplica": 80},
    },
}
PROFILE = Profile(((1, 0.066), (2, 0.071), (4, 0.081), (8, 0.101)), 5.0)


def test_track_integrates_steps_and_finds_first_times() -> None:
    tr = Track(np.array([0.0, 10.0, 12.0, 30.0]), np.array([1.0, 3.0, 4.0, 1.0]), 40.0)
    assert tr.replica_seconds() == pytest.approx(10 * 1 + 2 * 3 + 18 * 4 + 10 * 1)
    assert tr.first_reached() == {2: 10.0, 3: 10.0, 4: 12.0}


def test_a_replay_matches_itself_and_a_late_fleet_does_not() -> None:
    rng = np.random.default_rng(3)
    counts = [int(rng.poisson(10 + 160 * min(max(s - 10, 0) / 60, 1))) for s in range(90)]
    times = np.concatenate([s + np.sort(rng.random(n)) for s, n in enumerate(counts)])
    sim = sim_track(replay("s", SPEC, times.tolist(), 150.0, PROFILE, 1, 2.0), 1)
    assert int(sim.desired.max()) >= 3
    same = compare(sim, sim)
    assert same.cost_error == 0 and same.worst_scale_up_gap() == 0
    late = Track(sim.t + 5.0, sim.desired, sim.end)
    off = compare(late, sim)
    assert off.worst_scale_up_gap() == pytest.approx(5.0)
    assert "first asked for 2" in off.report()


def test_the_replay_decides_on_the_operators_phase() -> None:
    times = np.arange(0.0, 30.0, 0.05).tolist()
    result = replay("s", SPEC, times, 30.0, PROFILE, initial=1, phase=0.7)
    assert result.ticks[:3, 0] == pytest.approx([0.7, 2.7, 4.7])


def test_decision_phase_is_the_grid_the_instants_sit_on() -> None:
    assert decision_phase([0.4, 2.38, 4.45, 10.4], 2.0) == pytest.approx(0.41, abs=0.01)
    # Around the wrap: instants just before and just after a multiple of the period.
    assert decision_phase([3.95, 6.05, 8.0], 2.0) == pytest.approx(2.0, abs=0.01)
    with pytest.raises(ValueError):
        decision_phase([], 2.0)


def test_real_track_reads_the_operators_history_stamps() -> None:
    t0 = stamp_seconds("2026-11-30T15:00:00.000Z", 0.0)
    history = [
        {"time": "2026-11-30T15:00:31.360Z", "fromReplicas": 1, "toReplicas": 2},
        {"time": "2026-11-30T15:00:52.500Z", "fromReplicas": 2, "toReplicas": 4},
        {"time": "2026-11-30T15:01:40.000Z", "fromReplicas": 4, "toReplicas": 1},
    ]
    tr = real_track(history, t0, 1, 120.0)
    assert tr.first_reached() == pytest.approx({2: 31.36, 3: 52.5, 4: 52.5})
    assert tr.replica_seconds() == pytest.approx(31.36 + 2 * 21.14 + 4 * 47.5 + 20.0)


def test_start_delays_run_from_each_decision_to_the_pod_taking_traffic() -> None:
    history = [
        {"time": "1970-01-01T00:00:10.000Z", "fromReplicas": 1, "toReplicas": 3},
        {"time": "1970-01-01T00:00:30.000Z", "fromReplicas": 3, "toReplicas": 4},
        {"time": "1970-01-01T00:01:00.000Z", "fromReplicas": 4, "toReplicas": 2},
    ]
    serving = [(5.0, 1), (14.0, 2), (19.5, 3), (31.0, 3), (36.0, 4), (61.0, 3)]
    assert start_delays(history, 0.0, serving) == pytest.approx((4.0, 9.5, 6.0))
    assert start_delays(history, 0.0, serving[:3]) == pytest.approx((4.0, 9.5))


def _sends(ramp: list[tuple[float, float]], seed: int) -> list[float]:
    """Poisson send times on the ramp, as the simulator draws its own traces."""
    rate = ramp_schedule(ramp)
    per_second = np.array([rate(s + 0.5) for s in range(int(ramp[-1][0]))])
    return poisson_arrivals(per_second, np.random.default_rng(seed)).tolist()


def _worst_gap_with_a_slower_live_replica(ramp: list[tuple[float, float]]) -> float:
    """The e2e run's manifest on ``ramp``: the largest gap between when a fleet whose
    replica is 15% slower than its profile (the live one, ~73 req/s for ~80) and one as
    profiled were first asked for each count, over arrival seeds and decision phases."""

    def table(slower: float) -> tuple[tuple[int, float], ...]:
        return tuple((b, slower * (0.060 + 0.005 * b)) for b in (1, 2, 4, 8))  # baseMs, perItemMs

    end, delays, worst = ramp[-1][0] + 60.0, (6.0,) * 6, 0.0
    for seed in range(6):
        sends = _sends(ramp, seed)
        for phase in (0.5, 1.3, 2.0):
            runs = [
                replay("r", scale_run.SPEC, sends, end, Profile(table(x), 6.0), 1, phase, delays)
                for x in (1.0, 1.15)
            ]
            gap = compare(sim_track(runs[1], 1), sim_track(runs[0], 1)).worst_scale_up_gap()
            worst = max(worst, gap)
    return worst


def test_the_e2e_ramp_keeps_a_slower_live_replica_within_one_decision() -> None:
    """e2e/test_autoscaling holds the live run's scale-ups to one decision period of its
    replay. Its ramp is steep where the thresholds lie, so a slower live replica moves a
    scale-up by one decision at most; on the gentle 70 s ramp it used before, by two."""
    period = scale_run.SPEC["autoscaling"]["intervalSeconds"]
    assert _worst_gap_with_a_slower_live_replica(scale_run.RAMP) <= period + 1e-6
    gentle = [(0, 10), (10, 10), (80, 200), (95, 200), (100, 0)]
    assert _worst_gap_with_a_slower_live_replica(gentle) >= 2 * period
