"""The sim-to-real comparison's arithmetic (the live check itself is in e2e/test_autoscaling)."""

from __future__ import annotations

import numpy as np
import pytest

from fleet.sim_to_real import Track, compare, replay, sim_track
from infleet_operator.simulator.profile import Profile

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
    counts += [0] * 60
    sim = sim_track(replay("s", SPEC, counts, 150.0, PROFILE, initial=1), 1)
    assert int(sim.desired.max()) >= 3
    same = compare(sim, sim)
    assert same.cost_error == 0 and same.worst_scale_up_gap() == 0
    late = Track(sim.t + 5.0, sim.desired, sim.end)
    off = compare(late, sim)
    assert off.worst_scale_up_gap() == pytest.approx(5.0)
    assert "first asked for 2" in off.report()
