"""The kopf timer that runs the autoscaler for every InferenceDeployment with it enabled.

Thin: read pods and the worker Deployment from the operator's indices, scrape,
call :meth:`Autoscaler.tick`, then write replicas (autoscaler field manager),
``status.autoscaler``, the ScalingLimited condition, and an Event per change.
The policy's state lives in memory per object; an operator restart (or a
leader change) starts the forecaster afresh and it re-learns within minutes; a new
measured pod start only moves the forecast lead (the policy keeps what it learnt).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from typing import Any

import kopf
from pydantic import ValidationError

from infleet_operator import api, apply, children, events, naming, status
from infleet_operator.autoscaling.spec import token_signal
from infleet_operator.kube import ApiError
from infleet_operator.metrics import record_autoscaler
from infleet_operator.runtime import Runtime
from infleet_operator.scaler.controller import Autoscaler, TickOutcome
from infleet_operator.scaler.grid import TIMER_SECONDS, decision_due, wait_s
from infleet_operator.scaler.prometheus import scrape_prometheus
from infleet_operator.scaler.scrape import scrape_pods

log = logging.getLogger(__name__)

IDEP = (api.GROUP, api.VERSION, api.PLURAL)
SCALING_LIMITED = "ScalingLimited"


def _enabled(spec: Any, **_: Any) -> bool:
    return bool((spec or {}).get("autoscaling", {}).get("enabled"))


def ready_pod_targets(pods: list[dict[str, Any]]) -> dict[str, str]:
    """Pod name -> IP of the Ready, not-terminating pods: the ones that take traffic.

    Starting pods are left out on purpose: they carry no load yet, and counting
    them as "did not answer" would extrapolate load onto them.
    """
    out: dict[str, str] = {}
    for pod in pods:
        md, st = pod.get("metadata", {}), pod.get("status", {})
        if md.get("deletionTimestamp") or not st.get("podIP"):
            continue
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in st.get("conditions") or []
        )
        if ready:
            out[str(md["name"])] = str(st["podIP"])
    return out


def limited_condition(outcome: TickOutcome, previous: list[dict[str, Any]]) -> dict[str, Any]:
    limit = outcome.decision.limited_by
    reason = {"max": "AtMaxReplicas", "min": "AtMinReplicas"}.get(limit or "", "WithinBounds")
    message = outcome.decision.reason if limit else "the autoscaler's choice is within bounds"
    by_type = {c.get("type", ""): c for c in previous}
    return status.condition(  # same shape and transition rules as our other conditions
        SCALING_LIMITED,
        limit is not None,
        reason,
        message[:512],
        None,
        by_type,
        dt.datetime.now(dt.UTC),
    )


def status_patch(body: dict[str, Any], outcome: TickOutcome) -> dict[str, Any] | None:
    """The status merge patch, or None when nothing a reader cares about changed."""
    current = body.get("status") or {}
    conditions = list(current.get("conditions") or [])
    new_cond = limited_condition(outcome, conditions)
    others = [c for c in conditions if c.get("type") != SCALING_LIMITED]
    old_cond = next((c for c in conditions if c.get("type") == SCALING_LIMITED), None)
    old_auto = dict(current.get("autoscaler") or {})
    new_auto = dict(outcome.status)
    if old_cond == new_cond and _same(old_auto, new_auto) and not outcome.plan.changed:
        return None
    return {
        "metadata": {"resourceVersion": body["metadata"].get("resourceVersion")},
        "status": {"autoscaler": new_auto, "conditions": [*others, new_cond]},
    }


def _same(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Equal but for the decision timestamp and the drifting rate figures."""
    volatile = {"lastDecision", "forecast", "observedArrivalRate", "queueDepth"}
    if {k: v for k, v in old.items() if k not in volatile} != {
        k: v for k, v in new.items() if k not in volatile
    }:
        return False
    # Refresh the figures now and then so `kubectl get -o yaml` is not stale.
    last = status.parse_time(old.get("lastDecision"))
    return last is not None and (dt.datetime.now(dt.UTC) - last).total_seconds() < 30


@kopf.timer(*IDEP, interval=TIMER_SECONDS, sharp=True, when=_enabled)
async def autoscale(
    body: kopf.Body, spec: kopf.Spec, namespace: str | None, name: str, memo: Any, **_: Any
) -> None:
    rt: Runtime | None = getattr(memo, "runtime", None)
    if rt is None:
        return
    try:
        parsed = api.InferenceDeploymentSpec.model_validate(dict(spec))
    except ValidationError:
        return  # the reconcile reports the invalid spec
    auto = parsed.autoscaling
    key = (namespace or "", naming.label_value(name))
    scalers: dict[Any, Autoscaler] = memo.__dict__.setdefault("autoscalers", {})
    last_ticks: dict[Any, float] = memo.__dict__.setdefault("autoscaler_ticks", {})
    due = decision_due(last_ticks.get(key), time.monotonic(), auto.interval_seconds)
    if due is None:
        return
    last_ticks[key] = due
    await asyncio.sleep(wait_s(due, time.monotonic()))  # read the metrics on the grid

    deployment = rt.indices.deployment(key)
    if deployment is None:
        return
    pod_start = (body.get("status") or {}).get("podStartSeconds")
    tokens = token_signal(parsed)
    scaler = scalers.get(key)
    if scaler is None or not scaler.adopt(auto, pod_start, tokens):
        scaler = scalers[key] = Autoscaler.for_spec(auto, pod_start, tokens)

    server = children.server_spec(parsed)
    timeout = auto.metrics.scrape_timeout_seconds
    targets = ready_pod_targets(rt.indices.pod_list(key))
    # The decision's time is when the counters were read: as the scrape starts. A live
    # run's arrivals, counted between scrape starts, match the pods' counter deltas to
    # 0.5 req/s rms (between scrape ends: 4.5); the replies take 10-200 ms to come back
    # and be parsed here under load, so stamping the rates when they had (as before) put
    # each interval off by up to a tenth of it, and each rate by as much.
    now, wall = time.monotonic(), dt.datetime.now(dt.UTC)
    if auto.metrics.prometheus_url:
        samples = await scrape_prometheus(
            auto.metrics.prometheus_url, namespace or "", targets, timeout, tokens is not None
        )
    else:
        samples = await scrape_pods(targets, server.metrics_port, timeout)
    current = int(deployment.get("spec", {}).get("replicas", 1))
    ready = int((deployment.get("status") or {}).get("readyReplicas") or 0)
    outcome = scaler.tick(
        now=now,
        samples=samples,
        current_replicas=current,
        ready_replicas=ready,
        wall=wall,
    )
    record_autoscaler(
        namespace or "",
        name,
        current,
        ready,
        auto.max_replicas,
        outcome.status,
        outcome.view.partial,
    )
    raw = dict(body)
    if outcome.plan.changed:
        await apply.set_replicas(rt.kube, deployment, outcome.plan.replicas)
        log.info("%s/%s: %s", namespace, name, outcome.event)
        events.post(raw, [events.Event("Normal", "Scaled", outcome.event or "")])
    patch = status_patch(raw, outcome)
    if patch is None:
        return
    try:
        await rt.kube.patch_status(api.KIND, namespace or "", name, patch)
    except ApiError as e:
        if e.status not in (404, 409):  # 409: a status refresh won the race; next tick
            raise
