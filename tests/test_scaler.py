"""The live autoscaler's plumbing: parse worker pages, rates, missing data, actuation rules."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from infleet_operator.api import AutoscalingSpec
from infleet_operator.autoscaling.hpa import HpaPolicy
from infleet_operator.autoscaling.observations import Decision
from infleet_operator.autoscaling.plan import plan_replicas
from infleet_operator.autoscaling.predictive import PredictivePolicy
from infleet_operator.autoscaling.spec import DEFAULT_LEAD_SECONDS, forecast_lead, policy_params
from infleet_operator.scaler.controller import Autoscaler
from infleet_operator.scaler.observer import FleetObserver
from infleet_operator.scaler.samples import MetricsParseError, WorkerSample, parse_worker_metrics
from infleet_worker.metrics import BatchMetrics, RequestMetrics, ready_gauge


def _worker_page(queue: int, inflight: int, arrivals: int, served: int, hits: int = 0) -> str:
    """A page rendered by the worker's own metrics code (the contract, not a copy of it)."""
    registry = CollectorRegistry()
    m = RequestMetrics("enc", "1", registry)
    BatchMetrics("enc", "1", registry).queue_depth.set(queue)
    m.bind_inflight(lambda: float(inflight))
    m.arrivals.inc(arrivals)
    m.requests["success"].inc(served)
    m.requests["cache_hit"].inc(hits)
    m.requests["rejected"].inc(3)
    ready_gauge("enc", "1", registry).set(1)
    return generate_latest(registry).decode()


def test_parse_worker_page() -> None:
    sample = parse_worker_metrics(
        _worker_page(queue=5, inflight=12, arrivals=100, served=80, hits=7)
    )
    assert sample == WorkerSample(5, 12, 100, 87, True)
    assert sample.running == 7


def test_parse_rejects_foreign_page() -> None:
    with pytest.raises(MetricsParseError):
        parse_worker_metrics("# HELP up x\n# TYPE up gauge\nup 1\n")


def _s(arrivals: float, served: float, queue: float = 0, inflight: float = 0) -> WorkerSample:
    return WorkerSample(queue, inflight, arrivals, served, True)


def test_rates_from_counter_deltas() -> None:
    obs = FleetObserver()
    first = obs.observe(0.0, {"a": _s(0, 0), "b": _s(0, 0)}, 2, 2)
    assert first.observation.missing  # no rate yet: never read as zero load
    view = obs.observe(10.0, {"a": _s(100, 90, 2, 5), "b": _s(300, 280, 4, 9)}, 2, 2)
    assert not view.partial
    assert view.observation.arrival_rate == pytest.approx(40.0)
    assert view.observation.completion_rate == pytest.approx(37.0)
    assert view.observation.queue_depth == 6
    assert view.observation.in_flight == 8  # running = inflight - queued


def test_failed_pod_is_extrapolated_and_marked_partial() -> None:
    obs = FleetObserver()
    obs.observe(0.0, {"a": _s(0, 0), "b": _s(0, 0)}, 2, 2)
    view = obs.observe(10.0, {"a": _s(100, 100, 3, 3), "b": None}, 2, 2)
    assert view.partial
    assert view.observation.arrival_rate == pytest.approx(20.0)  # 10/s seen, x2 pods
    assert view.observation.queue_depth == 6


def test_a_pod_just_ready_adds_only_its_own_arrivals() -> None:
    # After a scale-up the new pod is scraped for the first time: its counters started
    # at zero when it became Ready, so they are its own arrivals (2 here); the fleet's
    # rate is the old pod's plus those, not the old pod's extrapolated to both (twice).
    obs = FleetObserver()
    obs.observe(0.0, {"a": _s(0, 0)}, 2, 1)
    view = obs.observe(10.0, {"a": _s(100, 100, 1, 3), "b": _s(2, 0, 0, 2)}, 2, 2)
    assert not view.partial and not view.observation.missing
    assert view.observation.arrival_rate == pytest.approx(10.2)
    assert view.observation.completion_rate == pytest.approx(10.0)
    assert view.observation.queue_depth == 1 and view.observation.in_flight == 4  # gauges: both
    # ... and the next tick it has a rate like any pod.
    view = obs.observe(20.0, {"a": _s(200, 200), "b": _s(102, 100)}, 2, 2)
    assert view.observation.arrival_rate == pytest.approx(20.0)


def test_counter_reset_gives_no_negative_rate() -> None:
    obs = FleetObserver()
    obs.observe(0.0, {"a": _s(500, 500)}, 1, 1)
    view = obs.observe(10.0, {"a": _s(20, 20)}, 1, 1)  # restarted pod
    assert view.observation.missing


def test_all_scrapes_failed_is_missing() -> None:
    obs = FleetObserver()
    view = obs.observe(0.0, {"a": None, "b": None}, 2, 2)
    assert view.observation.missing and view.observation.queue_depth is None


def test_no_scale_down_on_partial_metrics() -> None:
    decision = Decision(1, "load fell", 1)
    assert plan_replicas(decision, 4, partial_metrics=True).replicas == 4
    assert plan_replicas(decision, 4, partial_metrics=False).replicas == 1
    up = Decision(6, "load rose", 6)
    assert plan_replicas(up, 4, partial_metrics=True).replicas == 6  # up is still allowed


def test_lead_prefers_override_then_measurement() -> None:
    spec = AutoscalingSpec(enabled=True)
    assert forecast_lead(spec, None) == DEFAULT_LEAD_SECONDS
    assert forecast_lead(spec, 42.5) == 42.5
    spec = AutoscalingSpec.model_validate({"enabled": True, "predictive": {"horizonSeconds": 90}})
    assert forecast_lead(spec, 42.5) == 90


def test_scale_down_hold_is_the_specs_else_each_policys_own() -> None:
    """Unset: hpa holds Kubernetes' 300 s, predictive one lead (no parameter: the policy
    follows each new measured lead); set: both hold what the spec says."""
    unset = {"enabled": True, "minReplicas": 1, "maxReplicas": 5}
    hpa = Autoscaler.for_spec(AutoscalingSpec.model_validate({**unset, "policy": "hpa"}), 30.0)
    assert isinstance(hpa.loop.policy, HpaPolicy)
    assert hpa.loop.policy.config.scale_down_stabilization_s == 300.0
    pred = AutoscalingSpec.model_validate({**unset, "policy": "predictive"})
    assert "down_window_s" not in policy_params(pred, 30.0)[1]
    scaler = Autoscaler.for_spec(pred, 30.0)
    assert scaler.adopt(pred, 45.0)  # a new pod start retunes, it does not rebuild
    assert isinstance(scaler.loop.policy, PredictivePolicy)
    assert scaler.loop.policy.down_window_s == 45.0
    off = AutoscalingSpec.model_validate({**unset, "predictive": {"enabled": False}})
    assert policy_params(off, 30.0)[1]["down_window_s"] == DEFAULT_LEAD_SECONDS
    for policy, key in (("hpa", "scale_down_stabilization_s"), ("predictive", "down_window_s")):
        spec = {**unset, "policy": policy, "scaleDownStabilizationSeconds": 45}
        assert policy_params(AutoscalingSpec.model_validate(spec), 30.0)[1][key] == 45.0


@pytest.mark.parametrize("policy", ["hpa", "kpa", "predictive"])
def test_every_policy_builds_from_spec(policy: str) -> None:
    spec = AutoscalingSpec.model_validate(
        {"enabled": True, "policy": policy, "minReplicas": 1, "maxReplicas": 5}
    )
    scaler = Autoscaler.for_spec(spec, 30.0)
    assert scaler.policy_name == policy
    assert scaler.matches(spec, 30.0)
    assert policy_params(spec, 30.0)[1]["max_replicas"] == 5


def test_tick_scales_up_under_load_and_records_history() -> None:
    spec = AutoscalingSpec.model_validate(
        {
            "enabled": True,
            "policy": "hpa",
            "minReplicas": 1,
            "maxReplicas": 8,
            "targetQueueDepthPerReplica": 4,
            "intervalSeconds": 1,
        }
    )
    scaler = Autoscaler.for_spec(spec, 10.0)
    outcome = None
    arrivals = 0.0
    for t in range(0, 40, 5):
        arrivals += 500
        samples = {"a": _s(arrivals, arrivals * 0.5, queue=40, inflight=48)}
        outcome = scaler.tick(
            now=float(t),
            samples=samples,
            current_replicas=1,
            ready_replicas=1,
        )
        if outcome.plan.changed:
            break
    assert outcome is not None and outcome.plan.changed
    assert outcome.plan.replicas > 1
    assert outcome.event and "Scaled up from 1" in outcome.event
    assert outcome.status["history"][-1]["toReplicas"] == outcome.plan.replicas
    assert outcome.status["policy"] == "hpa"


def test_tick_holds_when_metrics_missing() -> None:
    spec = AutoscalingSpec.model_validate({"enabled": True, "policy": "predictive"})
    scaler = Autoscaler.for_spec(spec, None)
    outcome = scaler.tick(
        now=0.0,
        samples={"a": None},
        current_replicas=3,
        ready_replicas=3,
    )
    assert outcome.plan.replicas == 3 and not outcome.plan.changed


# -- timer helpers (pure parts of the kopf timer) -----------------------------------------
def _pod(name: str, ip: str | None, ready: bool, deleting: bool = False) -> dict[str, object]:
    md: dict[str, object] = {"name": name}
    if deleting:
        md["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    st: dict[str, object] = {
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]
    }
    if ip:
        st["podIP"] = ip
    return {"metadata": md, "status": st}


def test_only_ready_serving_pods_are_scraped() -> None:
    from infleet_operator.scaler.timer import ready_pod_targets

    pods = [
        _pod("a", "10.0.0.1", True),
        _pod("b", "10.0.0.2", False),  # starting: carries no load yet
        _pod("c", None, True),
        _pod("d", "10.0.0.4", True, deleting=True),
    ]
    assert ready_pod_targets(pods) == {"a": "10.0.0.1"}  # type: ignore[arg-type]


def test_status_patch_sets_scaling_limited_and_keeps_other_conditions() -> None:
    from infleet_operator.scaler.timer import status_patch

    spec = AutoscalingSpec.model_validate(
        {
            "enabled": True,
            "policy": "hpa",
            "minReplicas": 1,
            "maxReplicas": 2,
            "targetQueueDepthPerReplica": 1,
            "intervalSeconds": 1,
        }
    )
    scaler = Autoscaler.for_spec(spec, 10.0)
    scaler.tick(
        now=0.0,
        samples={"a": _s(0, 0)},
        current_replicas=2,
        ready_replicas=2,
    )
    outcome = scaler.tick(
        now=15.0,
        samples={"a": _s(1000, 900, queue=50, inflight=60)},
        current_replicas=2,
        ready_replicas=2,
    )
    assert outcome.decision.limited_by == "max"
    body = {
        "metadata": {"resourceVersion": "7"},
        "status": {"conditions": [{"type": "Ready", "status": "True"}]},
    }
    patch = status_patch(body, outcome)
    assert patch is not None
    types = {c["type"]: c for c in patch["status"]["conditions"]}
    assert types["Ready"]["status"] == "True"
    assert types["ScalingLimited"]["status"] == "True"
    assert types["ScalingLimited"]["reason"] == "AtMaxReplicas"
    assert patch["metadata"]["resourceVersion"] == "7"


def test_prometheus_queries_and_missing_pods() -> None:
    from infleet_operator.scaler.prometheus import assemble, per_pod, queries

    qs = queries("ns", ["w-1", "w-2"])
    assert 'pod=~"w-1|w-2"' in qs["queue_depth"]
    assert 'outcome=~"cache_hit|success"' in qs["served_total"]
    ok = {"status": "success", "data": {"result": [{"metric": {"pod": "w-1"}, "value": [0, "3"]}]}}
    values = {f: per_pod(ok) for f in qs}
    samples = assemble(["w-1", "w-2"], values)
    assert samples["w-1"] is not None and samples["w-1"].queue_depth == 3
    assert samples["w-2"] is None  # absent from Prometheus = missing, not zero
    with pytest.raises(ValueError):
        per_pod({"status": "error", "error": "bad query"})


@pytest.mark.parametrize("tick", [1.0, 3.0, 7.0, 15.0])
def test_predictive_scales_down_after_window_whatever_the_tick(tick: float) -> None:
    """Regression: the hold window used to never complete unless it was a multiple of the tick."""
    from infleet_operator.autoscaling.observations import Observation
    from infleet_operator.autoscaling.registry import make_policy

    policy = make_policy(
        "predictive",
        {
            "min_replicas": 1,
            "max_replicas": 10,
            "lead_s": 10.0,
            "down_window_s": 20.0,
            "down_step_interval_s": 5.0,
            "capacity_per_replica": 50.0,
        },
    )
    t, replicas, first_down = 0.0, 6, None
    while t < 200:
        obs = Observation(
            t, replicas, replicas, queue_depth=0, in_flight=0, arrival_rate=0.0, completion_rate=0.0
        )
        decision = policy.decide(obs)
        if decision.desired_replicas < replicas and first_down is None:
            first_down = t
        replicas = decision.desired_replicas
        t += tick
    assert first_down is not None and first_down <= 20.0 + tick
    assert replicas == 1


def test_predictive_catches_a_steep_ramp_within_a_few_ticks() -> None:
    """A 4 req/s^2 ramp with 5 s pod starts: the slow level alone reacted ~20 s late."""
    from infleet_operator.autoscaling.observations import Observation
    from infleet_operator.autoscaling.registry import make_policy

    policy = make_policy(
        "predictive",
        {"min_replicas": 1, "max_replicas": 10, "lead_s": 5.0, "capacity_per_replica": 80.0},
    )
    per_replica = 80.0 * 0.7  # capacity x default target utilisation
    t, replicas, crossed, scaled = 0.0, 1, None, None
    while t < 60:
        rate = 10.0 + 4.0 * max(0.0, t - 10.0)
        if crossed is None and rate > per_replica:
            crossed = t
        obs = Observation(
            t,
            replicas,
            replicas,
            queue_depth=0,
            in_flight=1,
            arrival_rate=rate,
            completion_rate=min(rate, 80.0 * replicas),
        )
        replicas = policy.decide(obs).desired_replicas
        if scaled is None and replicas > 1:
            scaled = t
        t += 2.0
    assert crossed is not None and scaled is not None
    assert scaled - crossed <= 6.0, f"scaled {scaled - crossed:.0f}s after the load crossed"
