"""bench/autoscaling.py: its jobs build policies through the spec, and its arithmetic."""

from __future__ import annotations

import math

import autoscaling as bench


def test_cost_at_goal_interpolates_between_the_dearest_miss_and_the_cheapest_hit() -> None:
    assert bench.cost_at_goal([(100.0, 0.98), (200.0, 1.0)]) == 150.0
    assert bench.cost_at_goal([(100.0, 0.995)]) == 100.0
    assert math.isinf(bench.cost_at_goal([(100.0, 0.9), (300.0, 0.98)]))


def test_a_remedy_job_runs_through_the_spec_and_reports_level_one() -> None:
    job = bench.Job("predictive", "flash", 60.0, 1, 0.5, 900, "shedding")
    _, att, cost, top = bench.run_job(job)
    assert 0 < att <= 1 and cost > 0 and top >= att  # level 1 is never shed
    plain = bench.run_job(bench.Job("predictive", "flash", 60.0, 1, 0.5, 900))
    assert plain[3] == plain[1]
