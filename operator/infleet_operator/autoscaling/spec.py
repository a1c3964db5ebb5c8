"""``spec.autoscaling`` -> everything the control loop runs with: one path for both callers.

The operator's timer and ``infleet simulate`` both call :func:`loop_settings`
and :class:`ControlLoop`, and nothing else, so a manifest replayed in the
simulator decides exactly as it would in the cluster: same policy, same
parameters, same decision period, bounds, stabilisation and step limits.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from infleet_operator.api import AutoscalingSpec, InferenceDeploymentSpec, PolicyName
from infleet_operator.autoscaling.observations import Decision, Observation
from infleet_operator.autoscaling.plan import Plan, plan_replicas
from infleet_operator.autoscaling.policy import Leads, Policy
from infleet_operator.autoscaling.registry import make_policy
from infleet_operator.autoscaling.tokens import DEFAULT_TOKENS_PER_SEQUENCE, TokenSignal
from infleet_operator.generation import generates

DEFAULT_LEAD_SECONDS = 60.0  # until the operator has measured a pod start
# Metrics read through Prometheus are as old as its scrape interval (the chart's
# ServiceMonitor scrapes every 15 s); scraping pods directly reads them at each decision.
PROMETHEUS_SCRAPE_SECONDS = 15.0
# Predictive's prior for a generative fleet, in generated tokens/s per replica, until it
# has learned the fleet's own (set predictive.capacityPerReplica from `infleet profile`).
DEFAULT_TOKENS_PER_REPLICA = 1000.0


def shed_queue_depth(auto: AutoscalingSpec) -> float | None:
    """overload.shedding: the queue per replica at which priority level 2 is refused
    (default twice targetQueueDepthPerReplica); None when shedding is off. The worker
    enforces it (server.shedQueueDepth) and the simulator models it."""
    shedding = auto.overload.shedding
    if not shedding.enabled:
        return None
    return shedding.queue_depth_per_replica or 2 * auto.target_queue_depth_per_replica


def token_signal(spec: InferenceDeploymentSpec) -> TokenSignal | None:
    """The token signal of a generative fleet (None: a single-pass model counts requests)."""
    if not generates(spec):
        return None
    per_seq = DEFAULT_TOKENS_PER_SEQUENCE
    gen = spec.engine.generation
    if gen is not None and gen.max_tokens is not None:
        per_seq = min(per_seq, float(gen.max_tokens))
    return TokenSignal(spec.autoscaling.target_kv_cache_usage, per_seq)


def forecast_lead(spec: AutoscalingSpec, measured_pod_start_s: float | None) -> float:
    """Forecast horizon: the user's override, else the measured pod start-to-Ready time."""
    if spec.predictive.horizon_seconds is not None:
        return float(spec.predictive.horizon_seconds)
    if measured_pod_start_s is not None and measured_pod_start_s > 0:
        return float(measured_pod_start_s)
    return DEFAULT_LEAD_SECONDS


def policy_params(
    spec: AutoscalingSpec, measured_pod_start_s: float | None, tokens: bool = False
) -> tuple[str, dict[str, Any]]:
    """Policy name and the parameters the registry builds it from (``tokens``: a generative
    fleet, whose predictive capacity is in generated tokens/s)."""
    params: dict[str, Any] = {
        "min_replicas": spec.min_replicas,
        "max_replicas": spec.max_replicas,
    }
    target = spec.target_queue_depth_per_replica
    if spec.policy == PolicyName.HPA:
        params.update(
            target_per_replica=target,
            sync_period_s=float(spec.interval_seconds),
            scale_up_stabilization_s=float(spec.scale_up_stabilization_seconds),
        )
        if spec.scale_down_stabilization_seconds is not None:  # else hpa.py's, Kubernetes' 300 s
            params["scale_down_stabilization_s"] = float(spec.scale_down_stabilization_seconds)
    elif spec.policy == PolicyName.KPA:
        params.update(target_concurrency=target, tick_s=float(spec.interval_seconds))
    else:
        p = spec.predictive
        lead = forecast_lead(spec, measured_pod_start_s) if p.enabled else 0.0
        params.update(
            lead_s=lead,
            target_utilization=p.target_utilization,
            saturation_queue_per_replica=target,
        )
        hold = spec.scale_down_stabilization_seconds
        if hold is not None:
            params["down_window_s"] = float(hold)
        elif not p.enabled:  # no lead to hold for; else the window is one lead (predictive.py)
            params["down_window_s"] = DEFAULT_LEAD_SECONDS
        if p.capacity_per_replica is not None:
            params["capacity_per_replica"] = p.capacity_per_replica
        elif tokens:
            params["capacity_per_replica"] = DEFAULT_TOKENS_PER_REPLICA
        if p.burst_quantile is not None:
            params.update(burst_quantile=p.burst_quantile, burst_max_headroom=p.max_burst_headroom)
    return spec.policy.value, params


@dataclass(frozen=True)
class LoopSettings:
    """What the autoscaler runs with for one spec (and one measured pod start time)."""

    policy: str
    params: dict[str, Any] = field(hash=False)
    decision_period_s: float
    scrape_interval_s: float  # how often the metrics it reads are refreshed
    scrape_at_decision: bool  # True: pods are scraped at each decision (no metrics lag)
    lead_s: float
    min_replicas: int
    max_replicas: int
    tokens: TokenSignal | None = None  # a generative fleet's signal (autoscaling/tokens.py)


def loop_settings(
    spec: AutoscalingSpec, measured_pod_start_s: float | None, tokens: TokenSignal | None = None
) -> LoopSettings:
    name, params = policy_params(spec, measured_pod_start_s, tokens is not None)
    period = float(spec.interval_seconds)
    prometheus = spec.metrics.prometheus_url is not None
    return LoopSettings(
        policy=name,
        params=params,
        decision_period_s=period,
        scrape_interval_s=PROMETHEUS_SCRAPE_SECONDS if prometheus else period,
        scrape_at_decision=not prometheus,
        lead_s=forecast_lead(spec, measured_pod_start_s),
        min_replicas=spec.min_replicas,
        max_replicas=spec.max_replicas,
        tokens=tokens,
    )


class ControlLoop:
    """One policy instance and the actuation rule: an observation in, a decision and plan out."""

    def __init__(self, settings: LoopSettings, policy: Policy | None = None) -> None:
        self.settings = settings
        self.policy = policy or make_policy(settings.policy, settings.params)

    @classmethod
    def for_spec(
        cls,
        spec: AutoscalingSpec,
        measured_pod_start_s: float | None,
        tokens: TokenSignal | None = None,
    ) -> ControlLoop:
        return cls(loop_settings(spec, measured_pod_start_s, tokens))

    def retune(self, settings: LoopSettings) -> bool:
        """Take ``settings`` without losing the policy's state, when only the lead changed.

        The measured pod start (the lead) moves each time a pod becomes Ready; a
        rebuild then would restart the forecaster and the rates on every scale-up.
        False: something else changed, build a new loop.
        """
        old, lead = self.settings, settings.params.get("lead_s")
        params = settings.params
        if lead is not None:
            params = {**params, "lead_s": old.params.get("lead_s")}
        if replace(settings, lead_s=old.lead_s, params=params) != old:
            return False
        if lead is not None and lead != old.params.get("lead_s"):
            if not isinstance(self.policy, Leads):
                return False
            self.policy.set_lead(float(lead))
        self.settings = settings
        return True

    def step(self, obs: Observation, *, partial_metrics: bool = False) -> tuple[Decision, Plan]:
        decision = self.policy.decide(obs)
        return decision, plan_replicas(
            decision, obs.current_replicas, partial_metrics=partial_metrics
        )
