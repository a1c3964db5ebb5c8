"""The operator's per-fleet autoscaler gauges: what a tick recorded, a forecast kept
until the next one, and a fleet that stopped ticking (deleted) gone from the page."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from infleet_operator.metrics import FLEET_TTL_S, FleetGauges


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def page(gauges: FleetGauges) -> dict[tuple[str, str], float]:
    registry = CollectorRegistry()
    registry.register(gauges)
    out = {}
    for fam in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in fam.samples:
            out[(s.name, s.labels["name"])] = s.value
    return out


def test_ticks_are_exported_and_a_silent_fleet_leaves() -> None:
    clock = Clock()
    g = FleetGauges(clock)
    g.set("ns", "a", {"replicas": 2, "desired": 3, "forecast": 40.5, "missing": 0})
    g.set("ns", "b", {"replicas": 1, "missing": 1})
    got = page(g)
    assert got[("infleet_autoscaler_desired_replicas", "a")] == 3
    assert got[("infleet_autoscaler_forecast_rps", "a")] == 40.5
    assert ("infleet_autoscaler_forecast_rps", "b") not in got  # never forecast: absent
    clock.now += FLEET_TTL_S / 2
    g.set("ns", "a", {"replicas": 3, "missing": 0})  # no forecast this tick: keep the last
    assert page(g)[("infleet_autoscaler_forecast_rps", "a")] == 40.5
    clock.now += FLEET_TTL_S / 2 + 1  # b has not ticked for longer than the TTL
    got = page(g)
    assert ("infleet_autoscaler_replicas", "b") not in got
    assert got[("infleet_autoscaler_replicas", "a")] == 3
