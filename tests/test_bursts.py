"""Ready for bursts: learned headroom, adaptive batching and priority shedding."""

from __future__ import annotations

import numpy as np
import pytest

from infleet_operator.api import AutoscalingSpec
from infleet_operator.autoscaling import Observation, make_policy
from infleet_operator.autoscaling.bursts import RiseQuantile
from infleet_operator.autoscaling.spec import policy_params
from infleet_operator.simulator.fleet import simulate
from infleet_operator.simulator.fleet_config import FleetConfig
from infleet_operator.simulator.report import per_priority, summarize
from infleet_operator.simulator.scenario import setup_policy
from infleet_operator.simulator.traces import Trace, poisson_arrivals


def test_rise_quantile_learns_how_far_load_climbs_within_one_lead() -> None:
    rq = RiseQuantile(lead_s=60, history_s=10_000)
    assert rq.quantile(0.9) == 0.0  # no history yet
    for t in range(0, 6000, 10):  # 100 req/s, doubling for 30 s every 600 s
        rq.update(float(t), 200.0 if t % 600 >= 570 else 100.0)
    assert rq.samples > 500
    assert rq.quantile(0.99) == pytest.approx(1.0)  # the windows before a burst: +100%
    assert rq.quantile(0.5) == pytest.approx(0.0)


def test_rise_quantile_forgets_old_history() -> None:
    rq = RiseQuantile(lead_s=10, history_s=300)
    for t in range(0, 400, 5):
        rq.update(float(t), 300.0 if t == 100 else 100.0)
    assert rq.quantile(0.99) == pytest.approx(2.0)
    for t in range(400, 800, 5):
        rq.update(float(t), 100.0)
    assert rq.quantile(0.99) == 0.0


def _obs(t: float, rate: float, replicas: int) -> Observation:
    return Observation(t, replicas, replicas, 0.0, 0.0, rate, rate)


def test_burst_headroom_keeps_more_replicas_after_seeing_bursts() -> None:
    spec = AutoscalingSpec.model_validate(
        {
            "enabled": True,
            "maxReplicas": 50,
            "predictive": {"capacityPerReplica": 10, "burstQuantile": 0.95},
        }
    )
    name, params = policy_params(spec, 60.0)
    assert params["burst_quantile"] == 0.95 and params["burst_max_headroom"] == 1.0
    with_bursts = make_policy(name, params)
    plain = make_policy(name, {k: v for k, v in params.items() if not k.startswith("burst")})
    replicas = {id(with_bursts): 10, id(plain): 10}
    for t in range(0, 7200, 15):
        rate = 140.0 if t % 900 >= 840 else 70.0  # +100% bursts for 60 s every 15 min
        for p in (with_bursts, plain):
            replicas[id(p)] = p.decide(_obs(float(t), rate, replicas[id(p)])).desired_replicas
    d = with_bursts.decide(_obs(7215.0, 70.0, replicas[id(with_bursts)]))
    assert "burst headroom +" in d.reason
    assert replicas[id(with_bursts)] >= 1.5 * replicas[id(plain)]


def _overload_trace(rate: float, seconds: int, seed: int = 1) -> Trace:
    r = np.full(seconds, rate)
    arrivals = poisson_arrivals(r, np.random.default_rng(seed))
    return Trace("flat", arrivals, r, float(seconds))


TABLE = ((1, 0.10), (8, 0.16), (64, 0.40))  # 50 req/s at batch 8, 160 req/s at batch 64


def test_adaptive_batching_trades_latency_for_throughput_while_overloaded() -> None:
    trace = _overload_trace(100.0, 180)
    base = FleetConfig(service_table=TABLE, max_batch=8, request_timeout_s=5.0)

    def run(enabled: bool) -> tuple[float, int]:
        adaptive = {"enabled": enabled, "maxBatchSize": 64, "maxQueueDelayMicroseconds": 20_000}
        loop, cfg = setup_policy("hpa", trace, base, 8, 1, 1, extra={
            "overload": {"adaptiveBatching": adaptive}})  # fmt: skip
        assert cfg.overload_max_batch == (64 if enabled else 0)
        r = simulate(trace, loop, cfg)
        return summarize("hpa", r, 2.0).slo_attainment, r.timed_out

    plain, boosted = run(False), run(True)
    assert plain[1] > 1000 and boosted[1] == 0
    assert boosted[0] > 0.95 > plain[0]


def test_shedding_refuses_the_lowest_priority_so_the_highest_keeps_its_slo() -> None:
    trace = _overload_trace(90.0, 300)
    base = FleetConfig(service_table=TABLE, max_batch=8, request_timeout_s=5.0,
                       priority_shares=(0.3, 0.7))  # fmt: skip
    shed = {"shedding": {"enabled": True, "queueDepthPerReplica": 4}}
    loop, cfg = setup_policy("hpa", trace, base, 8, 1, 1, extra={"overload": shed})
    assert cfg.shed_queue_per_replica == 4
    r = simulate(trace, loop, cfg)
    assert r.refused is not None and r.priority is not None
    refused = int(r.refused.sum())
    assert r.completed + r.timed_out + refused == len(trace.arrivals)
    assert not r.refused[r.priority == 1].any()  # level 1 is never shed
    (l1, _, att1, ref1), (l2, _, att2, ref2) = per_priority(r, 0.5)
    assert (l1, l2) == (1, 2) and ref1 == 0 and ref2 == refused > 0
    assert att1 > 0.99 and att2 < 0.7
    assert summarize("hpa", r, 0.5).refused == refused
