"""An in-memory stand-in for the few API calls the operator makes, for unit tests.

It models what the reconcile relies on: server-side apply is a no-op when
nothing changes (resourceVersion kept), ``spec.replicas`` ownership by field
manager (a conflict without ``force``; a field dropped by its last owner goes
back to its default), and it records every call as (group, resource, verb) so
tests can hold the calls against the RBAC rules. The behaviour that matters is
proven on the real API server in e2e/.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from infleet_operator.kube import RESOURCES, ApiError

Obj = dict[str, Any]
Call = tuple[str, str, str]  # (apiGroup, resource[/sub], verb)


@dataclass
class FakeKube:
    objects: dict[tuple[str, str | None, str], Obj] = field(default_factory=dict)
    replicas_owners: dict[tuple[str, str | None, str], set[str]] = field(default_factory=dict)
    calls: list[Call] = field(default_factory=list)
    conflict_once: set[str] = field(default_factory=set)  # "Kind/name": next unforced apply 409s
    _rv: int = 0

    def _record(self, kind: str, verb: str, sub: str | None = None) -> None:
        info = RESOURCES[kind]
        self.calls.append((info.group, info.plural + (f"/{sub}" if sub else ""), verb))

    def _bump(self, obj: Obj) -> None:
        self._rv += 1
        obj["metadata"]["resourceVersion"] = str(self._rv)

    def _managed(self, key: tuple[str, str | None, str], obj: Obj) -> None:
        owners = sorted(self.replicas_owners.get(key, set()))
        obj["metadata"]["managedFields"] = [
            {"manager": m, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}}
            for m in owners
        ]

    async def apply(self, obj: Obj, *, manager: str, force: bool) -> Obj:
        kind, md = obj["kind"], obj["metadata"]
        key = (kind, md.get("namespace"), md["name"])
        old = self.objects.get(key)
        self._record(kind, "patch")
        if old is None:
            self._record(kind, "create")
        name = f"{kind}/{md['name']}"
        if name in self.conflict_once and not force:
            self.conflict_once.discard(name)
            raise ApiError(409, {"reason": "Conflict", "message": f"conflict on {name}"})
        body_replicas = (obj.get("spec") or {}).get("replicas") if kind == "Deployment" else None
        owners = self.replicas_owners.setdefault(key, set())
        if old is None:
            if not (obj.get("spec") and obj["spec"].get("template")) and kind == "Deployment":
                raise ApiError(422, {"message": "spec.template: Required value"})
            new = copy.deepcopy(obj)
            new["metadata"].setdefault("generation", 1)
            new.setdefault("status", {})
            if kind == "Deployment":
                new["spec"].setdefault("replicas", 1)
        else:
            new = copy.deepcopy(old)
            partial = set(obj.get("spec") or {}) <= {"replicas"} and kind == "Deployment"
            if not partial:
                for k, v in obj.items():
                    if k not in ("metadata", "status"):
                        new[k] = copy.deepcopy(v)
                new["metadata"].update(
                    {k: copy.deepcopy(v) for k, v in md.items() if k != "resourceVersion"}
                )
                if kind == "Deployment":
                    new["spec"]["replicas"] = old["spec"].get("replicas", 1)
        if kind == "Deployment":
            if body_replicas is not None:
                others = owners - {manager}
                current = (old or {}).get("spec", {}).get("replicas")
                if others and current != body_replicas and not force:
                    raise ApiError(409, {"reason": "Conflict", "message": "conflict: replicas"})
                if force and current != body_replicas:
                    owners.clear()
                owners.add(manager)
                new["spec"]["replicas"] = body_replicas
            elif old is not None and not partial_only(obj):
                owners.discard(manager)
                if not owners:
                    new["spec"]["replicas"] = 1  # nobody owns it: back to the default
        if old is not None:
            cmp_old = {k: v for k, v in old.items() if k != "status"}
            cmp_new = {k: v for k, v in new.items() if k != "status"}
            cmp_old["metadata"] = _strip(old["metadata"])
            cmp_new["metadata"] = _strip(new["metadata"])
            if cmp_old == cmp_new:
                self._managed(key, new)
                self.objects[key] = new
                return copy.deepcopy(new)
            if old.get("spec") != new.get("spec"):
                new["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        self._bump(new)
        self._managed(key, new)
        self.objects[key] = new
        return copy.deepcopy(new)

    async def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        self._record(kind, "get")
        obj = self.objects.get((kind, namespace, name))
        return copy.deepcopy(obj) if obj is not None else None

    async def patch_status(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        self._record(kind, "patch", "status")
        obj = self.objects.get((kind, namespace, name))
        if obj is None:
            raise ApiError(404, {"message": "not found"})
        want = (patch.get("metadata") or {}).get("resourceVersion")
        if want and want != obj["metadata"].get("resourceVersion"):
            raise ApiError(409, {"reason": "Conflict", "message": "resourceVersion changed"})
        obj.setdefault("status", {}).update(copy.deepcopy(patch.get("status") or {}))
        self._bump(obj)
        return copy.deepcopy(obj)

    async def close(self) -> None:
        pass

    async def create(self, obj: Obj) -> Obj:
        self._record(obj["kind"], "create")
        md = obj["metadata"]
        key = (obj["kind"], md.get("namespace"), md["name"])
        if key in self.objects:
            raise ApiError(409, {"reason": "AlreadyExists", "message": "exists"})
        new = copy.deepcopy(obj)
        self._bump(new)
        self.objects[key] = new
        return copy.deepcopy(new)


def partial_only(obj: Obj) -> bool:
    """A replicas-only apply (the autoscaler's) says nothing about other fields."""
    return set(obj.get("spec") or {}) <= {"replicas"}


def _strip(md: Obj) -> Obj:
    return {k: v for k, v in md.items() if k not in ("resourceVersion", "managedFields")}
