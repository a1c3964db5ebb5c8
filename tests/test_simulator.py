"""Fleet simulator: conservation, determinism, and a short run end to end."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest

from infleet_operator.simulator.cli import main
from infleet_operator.simulator.fleet import FleetSim, simulate
from infleet_operator.simulator.fleet_config import FleetConfig
from infleet_operator.simulator.report import summarize
from infleet_operator.simulator.scenario import setup_policy
from infleet_operator.simulator.streams import expand
from infleet_operator.simulator.traces import load_counts, load_csv, synthetic


@pytest.mark.parametrize("lb", ["least-queue", "round-robin"])
@pytest.mark.parametrize("policy", ["hpa", "kpa", "predictive", "oracle"])
def test_every_request_completes_or_is_counted_dropped(lb: str, policy: str) -> None:
    trace = synthetic("flash", 1800, 80, seed=3)
    fleet = FleetConfig(lb=lb, start_delay_s=60, request_timeout_s=5.0)
    result = simulate(trace, *setup_policy(policy, trace, fleet, max_replicas=30))
    n = len(trace.arrivals)
    assert result.completed + result.timed_out == n
    served = ~np.isnan(result.latency)
    assert served.sum() == result.completed
    assert (result.latency[served] >= 0).all()
    assert result.replica_seconds > 0


def test_same_seed_same_result() -> None:
    def once() -> tuple[np.ndarray, float, int]:
        trace = synthetic("bursty", 1200, 100, seed=11)
        fleet = FleetConfig(seed=11, lb="round-robin")
        r = simulate(trace, *setup_policy("predictive", trace, fleet))
        return r.latency, r.replica_seconds, r.scale_actions

    a, b = once(), once()
    np.testing.assert_array_equal(a[0], b[0])
    assert a[1:] == b[1:]


def test_overload_times_out_instead_of_waiting_forever() -> None:
    trace = synthetic("step", 600, 400, seed=1)
    fleet = FleetConfig(request_timeout_s=2.0)
    r = simulate(trace, *setup_policy("hpa", trace, fleet, max_replicas=1))
    s = summarize("hpa", r, 0.5)
    assert r.timed_out > 0 and s.slo_attainment < 0.5 and s.limited_ticks > 0


def test_expand_strided_records() -> None:
    got = expand([[0, 5], [2, 2], [3, 1]])  # starts, counts, strides
    assert got.tolist() == [0, 3, 5, 6]


def test_csv_counts_and_timestamps(tmp_path) -> None:  # type: ignore[no-untyped-def]
    counts = tmp_path / "counts.csv"
    counts.write_text("count\n" + "\n".join(["3"] * 20))
    assert len(load_csv(counts).arrivals) == 60
    stamps = tmp_path / "stamps.csv"
    stamps.write_text("timestamp\n" + "\n".join(str(100 + i / 10) for i in range(50)))
    trace = load_csv(stamps)
    assert len(trace.arrivals) == 50 and trace.arrivals[0] == 0.0


def test_cli_short_run_json(capsys: pytest.CaptureFixture[str], tmp_path) -> None:  # type: ignore[no-untyped-def]
    # Speed sanity: a 20-minute trace through all four policies (no timing assert).
    out = tmp_path / "plot.png"
    args = ["--trace", "bursty", "--duration", "1200", "--json", "--policy", "all"]
    pytest.importorskip("matplotlib")
    assert main([*args, "--plot", str(out)]) == 0
    data = json.loads(capsys.readouterr().out)
    assert {r["policy"] for r in data["results"]} == {"hpa", "kpa", "predictive", "oracle"}
    assert out.stat().st_size > 0


class _ReadyTimes(FleetSim):
    """Notes when each replica became Ready."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.ready_at: dict[int, float] = {}

    def ready(self, pod: Any, now: float) -> None:
        self.ready_at.setdefault(pod.rid, now)
        super().ready(pod, now)


def test_a_live_runs_pod_starts_and_decision_phase_are_replayed() -> None:
    trace = load_counts(np.linspace(10, 400, 300), name="ramp")
    fleet = FleetConfig(
        start_delay_s=30, start_delays=(7.0, 11.0), tick_phase_s=0.5, initial_replicas=1
    )
    sim = _ReadyTimes(trace, *setup_policy("predictive", trace, fleet, max_replicas=20))
    result = sim.run()
    assert result.ticks[:2, 0] == pytest.approx([0.5, 0.5 + sim.cfg.tick_s])
    ups = sorted((r.created, sim.ready_at[r.rid] - r.created) for r in sim.pods if r.created >= 0)
    assert len(ups) >= 3
    assert [d for _, d in ups[:2]] == pytest.approx([7.0, 11.0])
    assert 24.0 <= ups[2][1] <= 36.0  # then the profile's start, with its jitter
