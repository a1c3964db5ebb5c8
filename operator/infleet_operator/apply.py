"""Server-side apply of the children, and the replica-count ownership rules.

One owner of the worker Deployment's ``spec.replicas`` per mode (DESIGN.md,
GitOps rule):

- autoscaling off: the operator (field manager ``infleet-operator``) applies
  ``spec.replicas`` from the InferenceDeployment;
- autoscaling on: the reconcile's apply body has no ``replicas`` at all; the
  field belongs to ``infleet-autoscaler``. The reconcile only *seeds* it (on
  creation: ``minReplicas``; on switching modes: the current count) and clamps
  it into [minReplicas, maxReplicas] when the bounds change — always under the
  autoscaler's manager, through :func:`set_replicas`, the same call the
  autoscaler timer uses.

Applies go without ``force`` first. A conflict means someone else (``kubectl
edit``, another controller) took a field the operator renders; the operator
then forces — every field in its body is one it owns by design — and says so
in an Event.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from infleet_operator import api, children, naming
from infleet_operator.kube import ApiError, KubeApi

Obj = dict[str, Any]

log = logging.getLogger("infleet_operator.apply")


@dataclass
class ApplyResult:
    objects: dict[str, Obj] = field(default_factory=dict)  # "Kind/name" -> applied object
    deployment_changed: bool = False  # its resourceVersion moved (new pods may roll)
    reclaimed: list[str] = field(default_factory=list)  # conflicts forced
    replicas_seeded: int | None = None

    @property
    def deployment(self) -> Obj | None:
        for key, obj in self.objects.items():
            if key.startswith("Deployment/"):
                return obj
        return None


def _key(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


async def apply_one(
    kube: KubeApi, obj: Obj, manager: str = naming.FIELD_MANAGER
) -> tuple[Obj, bool]:
    """Apply; on a conflict force it (we own every field we send). Returns (object, forced)."""
    try:
        return await kube.apply(obj, manager=manager, force=False), False
    except ApiError as e:
        if e.status != 409:
            raise
        log.warning("apply %s: conflict (%s); forcing our fields", _key(obj), e.message)
        return await kube.apply(obj, manager=manager, force=True), True


def replicas_owners(deployment: Obj) -> set[str]:
    """Field managers that own ``spec.replicas`` (from managedFields)."""
    owners = set()
    for entry in deployment.get("metadata", {}).get("managedFields") or []:
        fields = entry.get("fieldsV1") or {}
        if "f:replicas" in (fields.get("f:spec") or {}):
            owners.add(str(entry.get("manager", "")))
    return owners


def owned_fields(obj: Mapping[str, Any], manager: str = naming.FIELD_MANAGER) -> str:
    """The fields ``manager`` owns by server-side apply (managedFields), as canonical
    JSON; "" when it owns none. A field someone else changed or removed leaves the set."""
    md = obj.get("metadata") or {}
    owned = [
        entry.get("fieldsV1") or {}
        for entry in md.get("managedFields") or []
        if entry.get("manager") == manager
        and entry.get("operation") == "Apply"
        and not entry.get("subresource")
    ]
    return json.dumps(owned, sort_keys=True) if owned else ""


def replicas_patch(deployment: Obj, replicas: int) -> Obj:
    md = deployment["metadata"]
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": md["name"], "namespace": md["namespace"]},
        "spec": {"replicas": replicas},
    }


async def set_replicas(kube: KubeApi, deployment: Obj, replicas: int) -> Obj:
    """The autoscaler's write: the worker Deployment's replicas under its own field manager."""
    return await kube.apply(
        replicas_patch(deployment, replicas), manager=naming.AUTOSCALER_MANAGER, force=True
    )


def seed_replicas(spec: api.InferenceDeploymentSpec, existing: Obj | None) -> int | None:
    """What the reconcile must write under the autoscaler's manager (None = leave it).

    Needed when the autoscaler does not own the count yet (new Deployment, or
    autoscaling just switched on), or when the count is outside the bounds.
    """
    a = spec.autoscaling
    if not a.enabled:
        return None
    if existing is None:
        return a.min_replicas
    current = int(existing.get("spec", {}).get("replicas", 1))
    clamped = max(a.min_replicas, min(a.max_replicas, current))
    if naming.AUTOSCALER_MANAGER not in replicas_owners(existing) or clamped != current:
        return clamped
    return None


FETCH = "fetch"  # reconcile_children(existing=FETCH): read the Deployment first


async def reconcile_children(
    kube: KubeApi,
    body: Obj,
    spec: api.InferenceDeploymentSpec,
    on_applied: Callable[[str], Awaitable[None]] | None = None,
    *,
    existing: Obj | str | None = FETCH,
) -> ApplyResult:
    """Bring every child to its rendered state. Idempotent; safe to interrupt and rerun.

    ``existing`` is the worker Deployment as last seen (e.g. from the operator's
    watch cache; None = not there); with autoscaling on it is always read fresh,
    since the replica-ownership rules need its managedFields.
    ``on_applied("Kind/name")`` is awaited after each child (logging, tests).
    Order: ConfigMap, Deployment, then the Services and the PDB concurrently.
    """
    rendered = children.render(body, spec)
    md = body["metadata"]
    result = ApplyResult()
    current: Obj | None
    if spec.autoscaling.enabled or isinstance(existing, str):
        current = await kube.get(
            "Deployment", md["namespace"], rendered.deployment["metadata"]["name"]
        )
    else:
        current = existing
    seed = seed_replicas(spec, current)
    # Switching autoscaling on: hand the count to the autoscaler *before* our apply
    # drops the field (a field nobody owns any more would be reset to its default).
    if seed is not None and current is not None:
        current = await set_replicas(kube, current, seed)
        result.replicas_seeded = seed
    old_rv = current["metadata"].get("resourceVersion") if current is not None else None

    async def one(obj: Obj) -> None:
        applied, forced = await apply_one(kube, obj)
        key = _key(obj)
        if forced:
            result.reclaimed.append(key)
        if obj["kind"] == "Deployment":
            if seed is not None and current is None:
                applied = await set_replicas(kube, applied, seed)
                result.replicas_seeded = seed
            result.deployment_changed = old_rv != applied["metadata"].get("resourceVersion")
        result.objects[key] = applied
        if on_applied is not None:
            await on_applied(key)

    await one(rendered.config_map)
    await one(rendered.deployment)
    await asyncio.gather(*(one(o) for o in (rendered.service, rendered.headless, rendered.pdb)))
    result.reclaimed.sort()
    return result
