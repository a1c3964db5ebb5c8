"""Per-process operator state: the API client, what was reconciled, status refreshes.

Status follows the children: every watch event of a worker Deployment or pod
schedules a refresh of its owner's status (coalesced per owner, a short
debounce), computed from kopf's in-memory indices — no extra reads — and
written only when an operator-owned field changes.
"""

from __future__ import annotations

import asyncio
import copy
import datetime as dt
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from infleet_operator import api, apply, children, events, metrics, status
from infleet_operator.capacity import CapacityCache
from infleet_operator.kube import ApiError, Kube

Obj = dict[str, Any]
Key = tuple[str, str]  # (namespace, instance label value)

log = logging.getLogger("infleet_operator.runtime")

# Pod fields status computation reads; index entries keep only these (memory with many pods).
_POD_META = ("name", "namespace", "creationTimestamp", "deletionTimestamp", "labels")
_DEP_META = ("name", "namespace", "generation", "resourceVersion")


def slim_pod(body: Mapping[str, Any]) -> Obj:
    md = body.get("metadata") or {}
    st = body.get("status") or {}
    return copy.deepcopy(
        {
            "metadata": {k: md[k] for k in _POD_META if k in md},
            "status": {
                k: st[k] for k in ("phase", "conditions", "containerStatuses", "podIP") if k in st
            },
        }
    )


def slim_deployment(body: Mapping[str, Any]) -> Obj:
    md = body.get("metadata") or {}
    return copy.deepcopy(
        {
            "metadata": {k: md[k] for k in _DEP_META if k in md},
            "spec": {"replicas": (body.get("spec") or {}).get("replicas", 1)},
            "status": dict(body.get("status") or {}),
        }
    )


def plain(body: Mapping[str, Any]) -> Obj:
    """A kopf Body as a plain dict (without managedFields)."""
    out = copy.deepcopy(dict(body))
    out["metadata"] = {k: v for k, v in out.get("metadata", {}).items() if k != "managedFields"}
    return out


@dataclass
class Indices:
    """kopf's in-memory indices (set from the first handler call that receives them)."""

    ideps: Any = None
    pods: Any = None
    deployments: Any = None

    def _one(self, index: Any, key: Key) -> Obj | None:
        if index is None:
            return None
        items = list(index.get(key, []))
        return items[-1] if items else None

    def idep(self, key: Key) -> Obj | None:
        return self._one(self.ideps, key)

    def deployment(self, key: Key) -> Obj | None:
        return self._one(self.deployments, key)

    def pod_list(self, key: Key) -> list[Obj]:
        if self.pods is None:
            return []
        return list(self.pods.get(key, []))


@dataclass
class Runtime:
    kube: Kube
    debounce: float = 0.2
    indices: Indices = field(default_factory=Indices)
    generations: dict[Key, int] = field(default_factory=dict)  # last applied generation
    errors: dict[Key, tuple[str, str]] = field(default_factory=dict)
    # Restart counts of each owner's worker containers, for WorkerRestarted Events.
    restarts: dict[Key, dict[str, int]] = field(default_factory=dict)
    # The fields our field manager owned on the worker Deployment right after our
    # last apply (apply.owned_fields): if a watch event shows another set, someone
    # else changed or removed one of them. Writes to fields we do not own (the
    # autoscaler's replicas, another controller's annotation) leave it as it is.
    owned: dict[Key, str] = field(default_factory=dict)
    drift_delay: float = 1.0
    # A generative fleet's per-pod KV capacity and context length (status.generation).
    capacity: CapacityCache = field(default_factory=CapacityCache)
    capacity_retry: float = 2.0
    _seen_owned: dict[Key, str] = field(default_factory=dict)  # as the last event showed
    _drift: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    _pending: dict[Key, asyncio.Task[None]] = field(default_factory=dict)
    _dirty: set[Key] = field(default_factory=set)
    _locks: dict[Key, asyncio.Lock] = field(default_factory=dict)

    def capture(self, kwargs: Mapping[str, Any]) -> None:
        for attr, name in (
            ("ideps", "idep_index"),
            ("pods", "pod_index"),
            ("deployments", "deployment_index"),
        ):
            if name in kwargs and getattr(self.indices, attr) is None:
                setattr(self.indices, attr, kwargs[name])

    # -- status refresh, coalesced per owner -------------------------------------------
    def schedule(self, key: Key) -> None:
        task = self._pending.get(key)
        if task is not None and not task.done():
            self._dirty.add(key)
            return
        self._pending[key] = asyncio.create_task(self._debounced(key), name=f"status {key}")

    async def _debounced(self, key: Key) -> None:
        while True:
            await asyncio.sleep(self.debounce)
            self._dirty.discard(key)
            try:
                await self.refresh(key)
            except Exception:
                log.exception("status refresh of %s/%s failed", *key)
            if key not in self._dirty:
                break
        self._pending.pop(key, None)

    async def refresh(
        self, key: Key, *, body: Obj | None = None, deployment: Obj | None = None
    ) -> Obj | None:
        """Recompute and, if it changed, write the status of the owner of ``key``."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        async with lock:
            body = body or self.indices.idep(key)
            if body is None or body.get("metadata", {}).get("deletionTimestamp"):
                return None
            seen, pods = self.restarts.setdefault(key, {}), self.indices.pod_list(key)
            events.post(body, events.worker_restarts(seen, pods))
            if await self.capacity.update(key, _spec(body), pods):  # status.generation
                asyncio.get_running_loop().call_later(self.capacity_retry, self.schedule, key)
            for attempt in range(3):
                new = self.compute(key, body, deployment)
                old = body.get("status")
                if not status.changed(old, new):
                    return new
                md = body["metadata"]
                # A merge patch removes a field only when told (status.generation of a
                # fleet that stopped generating).
                dropped = {
                    k: None for k in status.OWNED_FIELDS if k in (old or {}) and k not in new
                }
                patch = {
                    "metadata": {"resourceVersion": md.get("resourceVersion")},
                    "status": {**dropped, **new},
                }
                try:
                    written = await self.kube.patch_status(
                        api.KIND, md["namespace"], md["name"], patch
                    )
                except ApiError as e:
                    if e.status == 404:
                        return None
                    if e.status != 409 or attempt == 2:
                        raise
                    fresh = await self.kube.get(api.KIND, md["namespace"], md["name"])
                    if fresh is None:
                        return None
                    body = fresh
                    continue
                metrics.STATUS_WRITES.inc()
                log.info("%s/%s status: %s", md["namespace"], md["name"], status.summary(new))
                events.post(body, events.status_transitions(old, new))
                return written.get("status", new)
            return None

    def compute(self, key: Key, body: Obj, deployment: Obj | None = None) -> Obj:
        spec = _spec(body)
        pods = self.indices.pod_list(key)
        observed = self.generations.get(key)
        if observed is None:
            observed = (body.get("status") or {}).get("observedGeneration")
        return status.compute(
            body,
            spec,
            deployment or self.indices.deployment(key),
            pods,
            observed_generation=observed,
            now=dt.datetime.now(dt.UTC),
            error=self.errors.get(key),
            capacity=self.capacity.summary(key, pods),
        )

    # -- the reconcile: the spec handlers and drift correction ---------------------------
    async def reconcile(
        self,
        key: Key,
        body: Obj,
        spec: api.InferenceDeploymentSpec,
        cause: str,
        on_applied: Callable[[str], Awaitable[None]] | None = None,
        *,
        existing: Obj | str | None = apply.FETCH,
    ) -> apply.ApplyResult:
        """Apply the children of ``body`` and record it: the generation observed, the
        fields we own now, metrics, the Event. API errors propagate to the caller."""
        timer = Timer()
        result = await apply.reconcile_children(
            self.kube, body, spec, on_applied, existing=existing
        )
        md = body["metadata"]
        generation = int(md.get("generation") or 0)
        self.errors.pop(key, None)
        self.generations[key] = generation
        self.note_applied(key, result.deployment)
        metrics.RECONCILES.labels(cause, "ok").inc()
        metrics.RECONCILE_SECONDS.observe(timer.seconds)
        config_hash = children.render(body, spec).config_hash
        events.post(body, events.after_reconcile(cause, generation, result, config_hash))
        log.info(
            "%s/%s %s: applied generation %s in %.3fs (deployment changed: %s, forced: %s)",
            md.get("namespace"),
            md.get("name"),
            cause,
            generation,
            timer.seconds,
            result.deployment_changed,
            result.reclaimed,
        )
        return result

    # -- drift: someone changed a field we own on the worker Deployment -----------------
    def note_applied(self, key: Key, deployment: Obj | None) -> None:
        if deployment is not None:
            self.owned[key] = apply.owned_fields(deployment)

    def check_drift(self, key: Key, deployment: Mapping[str, Any]) -> None:
        if (deployment.get("metadata") or {}).get("deletionTimestamp"):
            return
        seen = self._seen_owned[key] = apply.owned_fields(deployment)
        want = self.owned.get(key)
        if want is None or seen == want:
            return
        task = self._drift.get(key)
        if task is None or task.done():
            self._drift[key] = asyncio.create_task(self._correct(key), name=f"drift {key}")

    async def _correct(self, key: Key) -> None:
        await asyncio.sleep(self.drift_delay)
        if self._seen_owned.get(key) == self.owned.get(key):
            return  # that event predated our own apply, whose result is recorded now
        body = self.indices.idep(key)
        if body is None or body.get("metadata", {}).get("deletionTimestamp"):
            return
        if self.generations.get(key) != body["metadata"].get("generation"):
            return  # a spec change is being reconciled by the handler anyway
        md = body["metadata"]
        log.info(
            "%s/%s: the worker Deployment was edited outside the operator (fields it owns)",
            md.get("namespace"),
            md.get("name"),
        )
        try:
            spec = api.InferenceDeploymentSpec.model_validate(body.get("spec") or {})
            await self.reconcile(key, body, spec, "drift")
        except Exception:
            metrics.RECONCILES.labels("drift", "error").inc()
            log.exception("drift correction of %s/%s failed", *key)
            return
        self.schedule(key)

    async def close(self) -> None:
        for task in [*self._pending.values(), *self._drift.values()]:
            task.cancel()
        await self.kube.close()


def _spec(body: Obj) -> api.InferenceDeploymentSpec | None:
    try:
        return api.InferenceDeploymentSpec.model_validate(body.get("spec") or {})
    except ValidationError:
        return None


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.t0
