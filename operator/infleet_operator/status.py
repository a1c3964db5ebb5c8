"""Pure status computation: observed children and pods -> InferenceDeployment status.

Conditions (ours: Ready, Progressing, Degraded; others such as the autoscaler's
ScalingLimited are kept as found):

- Ready: every desired replica runs the current spec and is Ready; or every pod runs
  the current spec and some serve while more start (a scale-up: reason ScalingUp).
- Progressing: a new spec is being applied or rolled out, or pods are starting.
- Degraded: something a user must fix — an image that cannot be pulled, a
  worker that exits (model load failure, crash loop; with its exit code and
  last log line), pods no node can take (GPUs), a stuck rollout, a spec the
  operator cannot render.
"""

from __future__ import annotations

import datetime as dt
import statistics
from dataclasses import dataclass
from typing import Any

from infleet_operator import api, children, naming
from infleet_operator.generation import generates

Obj = dict[str, Any]

READY, PROGRESSING, DEGRADED = "Ready", "Progressing", "Degraded"
OURS = (READY, PROGRESSING, DEGRADED)
IMAGE_REASONS = {"ImagePullBackOff", "ErrImagePull", "InvalidImageName", "ErrImageNeverPull"}
# Status fields the operator owns (the autoscaler owns status.autoscaler).
OWNED_FIELDS = (
    "observedGeneration",
    "conditions",
    "replicas",
    "readyReplicas",
    "desiredReplicas",
    "selector",
    "endpoint",
    "gpusPerPod",
    "podStartSeconds",
    "generation",
)


def parse_time(value: str | None) -> dt.datetime | None:
    if not value:
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


def format_time(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class Problem:
    reason: str
    message: str
    rank: int  # lower = more important to show


def _last_line(text: str | None) -> str:
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    return lines[-1][:300] if lines else ""


def _pod_condition(pod: Obj, type_: str) -> Obj | None:
    for c in (pod.get("status") or {}).get("conditions") or []:
        if c.get("type") == type_:
            return dict(c)
    return None


def pod_problem(pod: Obj, gpus_per_pod: int) -> Problem | None:
    """What is wrong with one pod, in words a user can act on (None = nothing)."""
    md, st = pod.get("metadata") or {}, pod.get("status") or {}
    if md.get("deletionTimestamp"):
        return None
    name = md.get("name", "?")
    for cs in st.get("containerStatuses") or []:
        waiting = (cs.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason", "")
        if reason in IMAGE_REASONS:
            msg = waiting.get("message") or reason
            return Problem(
                "ImagePullBackOff",
                f"pod {name}: image {cs.get('image', '?')!r} cannot be pulled ({msg}); "
                "check spec.image and the registry credentials",
                0,
            )
        last = (cs.get("lastState") or {}).get("terminated") or {}
        term = (cs.get("state") or {}).get("terminated") or last
        crashing = reason == "CrashLoopBackOff" or (
            term and term.get("exitCode", 0) != 0 and not cs.get("ready")
        )
        if crashing:
            code = term.get("exitCode", "?") if term else "?"
            tail = _last_line(term.get("message") if term else None) or _last_line(
                waiting.get("message")
            )
            restarts = cs.get("restartCount", 0)
            return Problem(
                "CrashLoopBackOff",
                f"worker in pod {name} exited with code {code} ({restarts} restarts)"
                + (f": {tail}" if tail else "")
                + "; check spec.model (source, parameters) and the worker logs",
                1,
            )
    sched = _pod_condition(pod, "PodScheduled")
    if sched and sched.get("status") == "False" and sched.get("reason") == "Unschedulable":
        msg = sched.get("message") or "no node fits"
        hint = ""
        if gpus_per_pod > 0 and children.GPU_RESOURCE in msg:
            hint = (
                f"; each pod requests {gpus_per_pod} {children.GPU_RESOURCE} "
                "(engine.pipelineParallel): add GPU nodes or lower it"
            )
        return Problem("Unschedulable", f"pod {name} cannot be scheduled: {msg}{hint}", 2)
    return None


def deployment_problem(deployment: Obj | None) -> Problem | None:
    if not deployment:
        return None
    for c in (deployment.get("status") or {}).get("conditions") or []:
        if c.get("type") == "ReplicaFailure" and c.get("status") == "True":
            return Problem("ReplicaFailure", c.get("message") or "pods cannot be created", 0)
        if c.get("type") == "Progressing" and c.get("reason") == "ProgressDeadlineExceeded":
            return Problem("ProgressDeadlineExceeded", c.get("message") or "rollout stuck", 3)
    return None


def pod_start_seconds(pods: list[Obj]) -> float | None:
    """Median create-to-Ready time of the Ready pods (the autoscaler's forecast lead)."""
    samples = []
    for pod in pods:
        md = pod.get("metadata") or {}
        if md.get("deletionTimestamp"):
            continue
        ready = _pod_condition(pod, "Ready")
        if not ready or ready.get("status") != "True":
            continue
        created = parse_time(md.get("creationTimestamp"))
        became = parse_time(ready.get("lastTransitionTime"))
        if created and became and became >= created:
            samples.append((became - created).total_seconds())
    return float(statistics.median(samples)) if samples else None


STARTING_WINDOW = dt.timedelta(minutes=10)


def _starting(pod: Obj, now: dt.datetime) -> bool:
    """A new pod on its way to Ready (not one that lost readiness, nor a crash loop)."""
    if (_pod_condition(pod, "Ready") or {}).get("status") == "True":
        return False
    if any(
        int(cs.get("restartCount", 0))
        for cs in pod.get("status", {}).get("containerStatuses") or []
    ):
        return False
    created = parse_time((pod.get("metadata") or {}).get("creationTimestamp"))
    return created is not None and now - created < STARTING_WINDOW


def condition(
    type_: str,
    ok: bool,
    reason: str,
    message: str,
    generation: int | None,
    previous: dict[str, Obj],
    now: dt.datetime,
) -> Obj:
    status = "True" if ok else "False"
    prev = previous.get(type_)
    since = (
        prev.get("lastTransitionTime")
        if prev and prev.get("status") == status and prev.get("lastTransitionTime")
        else format_time(now)
    )
    cond: Obj = {
        "type": type_,
        "status": status,
        "reason": reason,
        "message": message,
        "lastTransitionTime": since,
    }
    if generation is not None:
        cond["observedGeneration"] = generation
    return cond


def compute(
    body: Obj,
    spec: api.InferenceDeploymentSpec | None,
    deployment: Obj | None,
    pods: list[Obj],
    *,
    observed_generation: int | None,
    now: dt.datetime,
    error: tuple[str, str] | None = None,
    capacity: Obj | None = None,
) -> Obj:
    """The operator-owned part of ``status`` (camelCase, as written to the API).

    ``observed_generation`` is the generation the operator last applied
    successfully (None: not yet); ``error`` a (reason, message) from a failed
    reconcile or an invalid spec; ``capacity`` a generative fleet's
    ``{kvCapacityTokens, contextLength}`` as its pods report them (capacity.py;
    None: no pod reported yet, the last figures stay).
    """
    md = body.get("metadata") or {}
    current_status = body.get("status") or {}
    previous = {c.get("type", ""): c for c in current_status.get("conditions") or []}
    generation = md.get("generation")
    name = md.get("name", "")
    gpus = spec.gpus_per_pod if spec is not None else None

    dep_spec = (deployment or {}).get("spec") or {}
    dep_st = (deployment or {}).get("status") or {}
    if deployment is not None:
        desired = int(dep_spec.get("replicas", 1))
    elif spec is not None:
        desired = spec.autoscaling.min_replicas if spec.autoscaling.enabled else spec.replicas
    else:
        desired = 0
    replicas = int(dep_st.get("replicas", 0))
    ready = int(dep_st.get("readyReplicas", 0))
    updated = int(dep_st.get("updatedReplicas", 0))
    available = int(dep_st.get("availableReplicas", 0))
    dep_current = deployment is not None and int(dep_st.get("observedGeneration", 0)) >= int(
        (deployment.get("metadata") or {}).get("generation", 0)
    )
    reconciled = observed_generation is not None and observed_generation == generation

    live = [p for p in pods if not (p.get("metadata") or {}).get("deletionTimestamp")]
    problems = [p for p in (pod_problem(pod, gpus or 0) for pod in live) if p]
    dp = deployment_problem(deployment)
    if dp:
        problems.append(dp)
    if error:
        problems.insert(0, Problem(error[0], error[1], -1))
    problems.sort(key=lambda p: p.rank)

    # Progressing
    if error is None and not reconciled:
        prog = (True, "Reconciling", f"applying generation {generation}")
    elif deployment is None:
        prog = (True, "Creating", "creating the worker Deployment")
    elif not dep_current:
        prog = (True, "RollingUpdate", "the worker Deployment has a new spec to roll out")
    elif updated < desired:
        prog = (True, "RollingUpdate", f"{updated}/{desired} pods run the current spec")
    elif replicas > desired:
        prog = (True, "RollingUpdate", f"{replicas - desired} old pods are being replaced")
    elif available < desired:
        prog = (True, "PodsStarting", f"{ready}/{desired} pods ready")
    else:
        prog = (False, "RolloutComplete", f"{desired} pods run generation {generation}")
    if dp and dp.reason == "ProgressDeadlineExceeded":
        prog = (False, dp.reason, dp.message)

    # Degraded
    if problems:
        top = problems[0]
        more = f" (and {len(problems) - 1} more problems)" if len(problems) > 1 else ""
        degr = (True, top.reason, top.message + more)
    else:
        degr = (False, "AsExpected", "no problems seen")

    # Ready
    rolled_out = reconciled and dep_current and updated >= desired and replicas <= desired
    endpoint = children.endpoint(body, spec) if spec is not None else None
    if desired == 0 and error is None:
        rdy = (False, "ScaledToZero", "replicas is 0: no worker serves")
    elif rolled_out and ready >= desired and desired > 0 and error is None:
        where = f"; serving at {endpoint.http}" if endpoint else ""
        rdy = (True, "AllReplicasReady", f"{ready}/{desired} replicas ready{where}")
    elif (
        rolled_out
        and 0 < ready < desired
        and error is None
        and not degr[0]
        and sum(_starting(p, now) for p in live) >= desired - ready
        and (previous.get(READY) or {}).get("status") == "True"  # not a first rollout
    ):
        # Every pod runs the current spec and some serve: the fleet is growing (the
        # autoscaler or a scale-up), not broken. Flapping Ready on each scale-up would
        # page people for the autoscaler doing its job.
        where = f"; serving at {endpoint.http}" if endpoint else ""
        rdy = (
            True,
            "ScalingUp",
            f"{ready}/{desired} replicas ready, {desired - ready} starting{where}",
        )
    else:
        why = degr if degr[0] else prog
        serving = f"; {ready} ready pods still serve" if ready else ""
        rdy = (False, why[1], f"{ready}/{desired} replicas ready: {why[2]}{serving}")

    conds = [
        condition(READY, rdy[0], rdy[1], rdy[2], generation, previous, now),
        condition(PROGRESSING, prog[0], prog[1], prog[2], generation, previous, now),
        condition(DEGRADED, degr[0], degr[1], degr[2], generation, previous, now),
    ]
    conds += [c for t, c in previous.items() if t not in OURS]

    status: Obj = {
        "observedGeneration": observed_generation
        if observed_generation is not None
        else current_status.get("observedGeneration"),
        "conditions": conds,
        "replicas": replicas,
        "readyReplicas": ready,
        "desiredReplicas": desired,
        "selector": naming.selector_string(name),
        "endpoint": endpoint.to_wire() if endpoint else current_status.get("endpoint"),
        "gpusPerPod": gpus if gpus is not None else current_status.get("gpusPerPod"),
        "podStartSeconds": pod_start_seconds(live) or current_status.get("podStartSeconds"),
        "generation": _generation(spec, capacity, current_status.get("generation")),
    }
    return {k: v for k, v in status.items() if v is not None}


def _generation(
    spec: api.InferenceDeploymentSpec | None, capacity: Obj | None, current: Obj | None
) -> Obj | None:
    """A generative fleet's figures: the pods' report, else the last one (scaled to
    zero, or pods not read yet); none for a single-pass fleet."""
    if spec is not None and not generates(spec):
        return None
    return capacity or current


def changed(current: Obj | None, new: Obj) -> bool:
    """Whether writing ``new`` would change any operator-owned status field."""
    current = current or {}
    return any(current.get(k) != new.get(k) for k in OWNED_FIELDS)


def summary(status: Obj) -> str:
    """One line for logs and Events: 'Ready=True Progressing=False ...'."""
    conds = {c["type"]: c for c in status.get("conditions", [])}
    return " ".join(f"{t}={conds[t]['status']}({conds[t]['reason']})" for t in OURS if t in conds)
