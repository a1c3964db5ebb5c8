"""Kubernetes Events: what the operator did and why, as (type, reason, message).

Pure message builders (tested without a cluster) plus :func:`post`, which hands
them to kopf's event poster (it batches and rate-limits them; RBAC: create
core/v1 events).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, cast

import kopf

from infleet_operator import naming
from infleet_operator.apply import ApplyResult

Obj = dict[str, Any]
log = logging.getLogger("infleet_operator.events")


@dataclass(frozen=True)
class Event:
    type: str  # Normal | Warning
    reason: str
    message: str


def after_reconcile(
    cause: str, generation: int | None, result: ApplyResult, config_hash: str
) -> list[Event]:
    out: list[Event] = []
    dep = result.deployment or {}
    replicas = (dep.get("spec") or {}).get("replicas")
    if cause == "create":
        out.append(
            Event(
                "Normal",
                "Created",
                f"created the worker Deployment ({replicas} replicas), its ConfigMap, "
                "a ClusterIP and a headless Service and a PodDisruptionBudget",
            )
        )
    elif result.deployment_changed:
        verb = "Updated" if cause == "update" else "Reconciled"
        why = {
            "update": "the spec changed",
            "drift": "the worker Deployment was edited outside the operator",
        }.get(cause, "the children drifted from the spec")
        out.append(
            Event(
                "Normal",
                verb,
                f"applied generation {generation} because {why}: worker pods roll"
                + (f" to config {config_hash}" if config_hash else "")
                + " (maxUnavailable 0, maxSurge 1)",
            )
        )
    elif cause == "update":
        out.append(
            Event("Normal", "Updated", f"applied generation {generation}; no worker pod changes")
        )
    if result.replicas_seeded is not None:
        out.append(
            Event(
                "Normal",
                "ReplicasHandedToAutoscaler",
                f"autoscaling is on: replicas set to {result.replicas_seeded} (within "
                f"minReplicas..maxReplicas) and owned by field manager "
                f"{naming.AUTOSCALER_MANAGER} from now on",
            )
        )
    for key in result.reclaimed:
        out.append(
            Event(
                "Warning",
                "ChildEdited",
                f"{key} had fields changed by another field manager; restored them from the "
                "InferenceDeployment (edit the InferenceDeployment, not its children)",
            )
        )
    return out


def status_transitions(old: Obj | None, new: Obj) -> list[Event]:
    """Events for condition changes users care about (Ready gained/lost, Degraded raised)."""
    before = {c["type"]: c for c in (old or {}).get("conditions") or []}
    after = {c["type"]: c for c in new.get("conditions") or []}
    out: list[Event] = []
    d_old, d_new = before.get("Degraded"), after.get("Degraded")
    if (
        d_new
        and d_new["status"] == "True"
        and (not d_old or d_old["status"] != "True" or d_old.get("reason") != d_new.get("reason"))
    ):
        out.append(Event("Warning", d_new["reason"], d_new["message"]))
    r_old, r_new = before.get("Ready"), after.get("Ready")
    if r_new and r_new["status"] == "True" and (not r_old or r_old["status"] != "True"):
        out.append(Event("Normal", "Ready", r_new["message"]))
    elif r_new and r_old and r_old["status"] == "True" and r_new["status"] != "True":
        out.append(Event("Normal", "NotReady", r_new["message"]))
    return out


def worker_restarts(seen: dict[str, int], pods: list[Obj]) -> list[Event]:
    """A Warning for each worker container whose restart count rose since ``seen`` (updated
    in place), saying how and why it exited (the last line of its termination message: the
    worker logs the reason last, e.g. a fatal device error or a dead engine core)."""
    out: list[Event] = []
    present: set[str] = set()
    for pod in pods:
        name = (pod.get("metadata") or {}).get("name", "?")
        for cs in (pod.get("status") or {}).get("containerStatuses") or []:
            key = f"{name}/{cs.get('name', '')}"
            present.add(key)
            count = int(cs.get("restartCount", 0))
            before = seen.get(key)
            seen[key] = count
            if before is None or count <= before:
                continue  # first sight (e.g. the operator restarted), or no new restart
            term = (cs.get("lastState") or {}).get("terminated") or {}
            lines = [ln.strip() for ln in (term.get("message") or "").splitlines() if ln.strip()]
            why = f": {lines[-1][:300]}" if lines else ""
            out.append(
                Event(
                    "Warning",
                    "WorkerRestarted",
                    f"worker in pod {name} exited with code {term.get('exitCode', '?')} and "
                    f"was restarted ({count} restarts){why}",
                )
            )
    for key in set(seen) - present:
        del seen[key]
    return out


def post(body: Obj, events: list[Event]) -> None:
    for ev in events:
        try:
            kopf.event(
                cast(kopf.Body, body), type=ev.type, reason=ev.reason, message=ev.message[:1024]
            )
        except Exception as e:  # outside kopf's context (tests): log only
            log.debug("event not posted (%s): %s %s", e, ev.reason, ev.message)
