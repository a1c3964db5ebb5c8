"""What the live autoscaler keeps between ticks, so it decides as the simulator does.

The decision grid (no drift from the timer's wakes), decision stamps to the
millisecond, a new measured pod start that moves the lead without restarting
the policy, and a pod that joined since the last tick counted, not extrapolated.
"""

from __future__ import annotations

import datetime as dt
import itertools

import pytest

from infleet_operator.api import AutoscalingSpec
from infleet_operator.scaler.controller import Autoscaler
from infleet_operator.scaler.grid import TIMER_SECONDS, decision_due, wait_s
from infleet_operator.scaler.observer import FleetObserver
from infleet_operator.scaler.samples import WorkerSample


def _s(arrivals: float, queue: float = 0) -> WorkerSample:
    return WorkerSample(queue, queue, arrivals, arrivals, True)


def test_decisions_stay_on_their_grid_when_the_wakes_slip() -> None:
    """Wakes every TIMER_SECONDS, each 40 ms late (a walk through the whole grid in 25 s):
    every decision still reads its metrics on the grid, never more than one slip late."""
    last, taken, t = None, [], 0.0
    while t < 60:
        due = decision_due(last, t, 2.0)
        if due is not None:
            last = due
            taken.append(t + wait_s(due, t))
        t += TIMER_SECONDS + 0.04
    gaps = [b - a for a, b in itertools.pairwise(taken)]
    assert all(1.9 <= g <= 2.1 for g in gaps)
    assert all(0 <= x - 2.0 * round(x / 2.0) <= 0.04 + 1e-9 for x in taken)


def test_after_a_stall_the_grid_restarts() -> None:
    assert decision_due(None, 5.0, 2.0) == 5.0
    assert decision_due(5.0, 5.9, 2.0) is None
    assert decision_due(5.0, 6.1, 2.0) == 7.0 and wait_s(7.0, 6.1) == pytest.approx(0.9)
    assert decision_due(5.0, 7.3, 2.0) == 7.0 and wait_s(7.0, 7.3) == 0.0
    assert decision_due(5.0, 12.0, 2.0) == 12.0  # five periods late: no burst of catch-ups


def test_decision_stamps_carry_milliseconds() -> None:
    spec = AutoscalingSpec.model_validate({"enabled": True, "policy": "hpa"})
    wall = dt.datetime(2026, 11, 30, 15, 0, 31, 361_900, tzinfo=dt.UTC)
    out = Autoscaler.for_spec(spec, 5.0).tick(
        now=0.0, samples={"a": _s(0)}, current_replicas=1, ready_replicas=1, wall=wall
    )
    assert out.status["lastDecision"] == "2026-11-30T15:00:31.361Z"


def test_a_new_pod_start_moves_the_lead_and_keeps_the_forecast() -> None:
    spec = AutoscalingSpec.model_validate(
        {"enabled": True, "minReplicas": 1, "maxReplicas": 8, "intervalSeconds": 2}
    )
    scaler = Autoscaler.for_spec(spec, 3.0)
    for k in range(10):
        scaler.tick(
            now=2.0 * k, samples={"a": _s(100.0 * k * k)}, current_replicas=1, ready_replicas=1
        )
    policy = scaler.loop.policy
    level = policy.forecaster.level  # type: ignore[attr-defined]
    assert scaler.adopt(spec, 5.0)
    assert scaler.loop.policy is policy and policy.forecaster.level == level  # type: ignore[attr-defined]
    assert policy.config.lead_s == 5.0 and scaler.loop.settings.lead_s == 5.0  # type: ignore[attr-defined]
    assert scaler.matches(spec, 5.0)
    other = AutoscalingSpec.model_validate({**spec.model_dump(by_alias=True), "maxReplicas": 9})
    assert not scaler.adopt(other, 5.0)  # a spec change rebuilds


def test_hpa_keeps_its_state_across_pod_starts() -> None:
    spec = AutoscalingSpec.model_validate({"enabled": True, "policy": "hpa"})
    scaler = Autoscaler.for_spec(spec, 3.0)
    policy = scaler.loop.policy
    assert scaler.adopt(spec, 7.0) and scaler.loop.policy is policy
    assert scaler.loop.settings.lead_s == 7.0


def test_a_joined_pod_counts_its_own_arrivals() -> None:
    """2 -> 3 pods: 300 req/s in all; the new pod served 1 s of the 2 s interval."""
    obs = FleetObserver()
    obs.observe(0.0, {"a": _s(0), "b": _s(0)}, 3, 2)
    obs.observe(2.0, {"a": _s(300), "b": _s(300)}, 3, 2)
    view = obs.observe(4.0, {"a": _s(550), "b": _s(550), "c": _s(100)}, 3, 3)
    assert view.observation.arrival_rate == pytest.approx(300.0)  # not 250 x 3/2 = 375
    assert not view.partial


def test_a_pod_back_from_unready_gets_no_rate_from_its_lifetime_counter() -> None:
    obs = FleetObserver()
    obs.observe(0.0, {"a": _s(0), "b": _s(0)}, 2, 2)
    obs.observe(2.0, {"a": _s(200)}, 2, 1)  # b unready for a while
    view = obs.observe(4.0, {"a": _s(400), "b": _s(5000)}, 2, 2)
    assert view.observation.arrival_rate == pytest.approx(200.0)  # a's 100/s, x2 pods
