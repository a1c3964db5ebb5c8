"""One autoscaler per InferenceDeployment: the state that lives between ticks.

``tick`` is plain code (no Kubernetes calls): metrics in, a plan and the
``status.autoscaler`` body out. The kopf timer only fetches, calls this, and
writes the result.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from infleet_operator.api import AutoscalingSpec
from infleet_operator.autoscaling.observations import Decision
from infleet_operator.autoscaling.plan import Plan
from infleet_operator.autoscaling.spec import ControlLoop, loop_settings
from infleet_operator.autoscaling.tokens import TokenSignal
from infleet_operator.scaler.observer import FleetObserver, FleetView
from infleet_operator.scaler.samples import WorkerSample

HISTORY_LENGTH = 10


@dataclass(frozen=True, slots=True)
class TickOutcome:
    plan: Plan
    decision: Decision
    view: FleetView
    status: dict[str, Any]  # status.autoscaler (camelCase)
    event: str | None  # an Event message when replicas change


def _now_iso(wall: datetime | None) -> str:
    """RFC 3339 in UTC to the millisecond: when the decision was taken, to well within a tick."""
    t = (wall or datetime.now(UTC)).astimezone(UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


@dataclass
class Autoscaler:
    """Control loop + observer + short history for one object; rebuilt when its spec changes."""

    loop: ControlLoop
    observer: FleetObserver = field(default_factory=FleetObserver)
    history: deque[dict[str, Any]] = field(default_factory=lambda: deque(maxlen=HISTORY_LENGTH))
    last_scale_time: str | None = None

    @classmethod
    def for_spec(
        cls, spec: AutoscalingSpec, pod_start_s: float | None, tokens: TokenSignal | None = None
    ) -> Autoscaler:
        """``tokens``: a generative fleet's signal (autoscaling.spec.token_signal)."""
        return cls(ControlLoop.for_spec(spec, pod_start_s, tokens), FleetObserver(tokens))

    @property
    def policy_name(self) -> str:
        return self.loop.settings.policy

    def matches(
        self, spec: AutoscalingSpec, pod_start_s: float | None, tokens: TokenSignal | None = None
    ) -> bool:
        return self.loop.settings == loop_settings(spec, pod_start_s, tokens)

    def adopt(
        self, spec: AutoscalingSpec, pod_start_s: float | None, tokens: TokenSignal | None = None
    ) -> bool:
        """Follow a new measured pod start in place; False: the spec changed, rebuild."""
        settings = loop_settings(spec, pod_start_s, tokens)
        return settings == self.loop.settings or self.loop.retune(settings)

    def tick(
        self,
        *,
        now: float,
        samples: dict[str, WorkerSample | None],
        current_replicas: int,
        ready_replicas: int,
        wall: datetime | None = None,
    ) -> TickOutcome:
        view = self.observer.observe(now, samples, current_replicas, ready_replicas)
        decision, plan = self.loop.step(view.observation, partial_metrics=view.partial)
        stamp = _now_iso(wall)
        event = None
        if plan.changed:
            self.last_scale_time = stamp
            direction = "up" if plan.replicas > current_replicas else "down"
            event = (
                f"Scaled {direction} from {current_replicas} to {plan.replicas} "
                f"({self.policy_name}): {plan.reason}"
            )
            self.history.append(
                {
                    "time": stamp,
                    "fromReplicas": current_replicas,
                    "toReplicas": plan.replicas,
                    "reason": plan.reason[:256],
                }
            )
        obs = view.observation
        status: dict[str, Any] = {
            "policy": self.policy_name,
            "lastDecision": stamp,
            "reason": plan.reason[:512],
            "desiredReplicas": plan.replicas,
            "leadSeconds": self.loop.settings.lead_s,
            "history": list(self.history),
        }
        if decision.forecast_rate is not None:
            status["forecast"] = round(decision.forecast_rate, 3)
        if obs.arrival_rate is not None:
            status["observedArrivalRate"] = round(obs.arrival_rate, 3)
        if obs.queue_depth is not None:
            status["queueDepth"] = round(obs.queue_depth, 3)
        if self.last_scale_time:
            status["lastScaleTime"] = self.last_scale_time
        return TickOutcome(plan, decision, view, status, event)
