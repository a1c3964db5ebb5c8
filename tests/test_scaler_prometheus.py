"""Prometheus mode's gap rules on the observer: rates from each sample's own timestamp,
so a sample Prometheus has not refreshed is no rate (missing), never a zero rate."""

from __future__ import annotations

from infleet_operator.scaler.observer import FleetObserver
from infleet_operator.scaler.prometheus import STALE_AFTER_S, queries
from infleet_operator.scaler.samples import WorkerSample


def sample(arrivals: float, at: float) -> WorkerSample:
    return WorkerSample(2.0, 3.0, arrivals, arrivals, ready=True, time=at)


def test_rates_use_the_sample_time_not_the_tick() -> None:
    obs = FleetObserver()
    obs.observe(100.0, {"a": sample(0, 50.0)}, 1, 1)
    view = obs.observe(101.0, {"a": sample(40, 54.0)}, 1, 1)  # 40 arrivals in 4 s
    assert not view.observation.missing
    assert view.observation.arrival_rate == 10.0


def test_an_unrefreshed_sample_is_missing_not_a_zero_rate() -> None:
    obs = FleetObserver()
    obs.observe(100.0, {"a": sample(0, 50.0)}, 2, 2)
    obs.observe(102.0, {"a": sample(40, 54.0)}, 2, 2)
    frozen = obs.observe(104.0, {"a": sample(40, 54.0)}, 2, 2)  # scrape gap: same sample
    assert frozen.observation.missing and frozen.partial
    later = obs.observe(106.0, {"a": sample(80, 58.0)}, 2, 2)
    assert not later.observation.missing and later.observation.arrival_rate == 10.0


def test_stale_pods_are_left_out_by_the_query() -> None:
    q = queries("ns", ["w-1"])["sample_time"]
    assert q.endswith(f"> time() - {STALE_AFTER_S}") and "timestamp(" in q
