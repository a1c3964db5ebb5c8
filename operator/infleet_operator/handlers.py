"""kopf handlers: thin. Rendering, apply rules and status live in plain modules.

- create / update(spec) / resume of an InferenceDeployment -> apply its children
  (server-side apply, owner references: garbage collection deletes them, so
  there is no delete handler and no handler here needs a finalizer; the
  autoscaler's timer, scaler/timer.py, does: kopf adds one to autoscaled objects);
- events of the worker Deployments and pods -> refresh the owner's status;
- indices of all three, so a status refresh reads nothing from the API server.
"""

from __future__ import annotations

from typing import Any

import kopf
from pydantic import ValidationError

from infleet_operator import api, kopf_settings, metrics, naming
from infleet_operator.kube import ApiError, Kube
from infleet_operator.manifests import format_errors
from infleet_operator.runtime import Key, Runtime, plain, slim_deployment, slim_pod

IDEP = (api.GROUP, api.VERSION, api.PLURAL)
CHILD_LABELS: dict[str, Any] = {
    naming.LABEL_MANAGED_BY: naming.FIELD_MANAGER,
    naming.LABEL_DEPLOYMENT: kopf.PRESENT,
}


def _rt(memo: Any) -> Runtime:
    rt: Runtime = memo.runtime
    return rt


def _key(namespace: str | None, name: str) -> Key:
    return (namespace or "", naming.label_value(name))


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, logger: Any, **_: Any) -> None:
    config = memo.config
    kopf_settings.configure(settings, config)
    kube = Kube.from_env()
    memo.runtime = Runtime(kube=kube, debounce=config.status_debounce)
    if not config.standalone:
        await kopf_settings.ensure_peering(kube, config.peering_name, logger)


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    rt = getattr(memo, "runtime", None)
    if rt is not None:
        await rt.close()


# -- indices ---------------------------------------------------------------------------
@kopf.index(*IDEP)
async def idep_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Key, Any]:
    return {_key(namespace, name): plain(body)}


@kopf.index("v1", "pods", labels=CHILD_LABELS)
async def pod_index(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Key, Any]:
    return {(namespace or "", labels[naming.LABEL_DEPLOYMENT]): slim_pod(body)}


@kopf.index("apps", "v1", "deployments", labels=CHILD_LABELS)
async def deployment_index(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, **_: Any
) -> dict[Key, Any]:
    return {(namespace or "", labels[naming.LABEL_DEPLOYMENT]): slim_deployment(body)}


# -- children changed -> owner's status ------------------------------------------------
@kopf.on.event("v1", "pods", labels=CHILD_LABELS)
async def pod_event(namespace: str | None, labels: kopf.Labels, memo: Any, **kw: Any) -> None:
    rt = _rt(memo)
    rt.capture(kw)
    rt.schedule((namespace or "", labels[naming.LABEL_DEPLOYMENT]))


@kopf.on.event("apps", "v1", "deployments", labels=CHILD_LABELS)
async def deployment_event(
    namespace: str | None, labels: kopf.Labels, body: kopf.Body, memo: Any, **kw: Any
) -> None:
    rt = _rt(memo)
    rt.capture(kw)
    key = (namespace or "", labels[naming.LABEL_DEPLOYMENT])
    rt.check_drift(key, body)
    rt.schedule(key)


@kopf.on.event(*IDEP)
async def idep_event(memo: Any, **kw: Any) -> None:
    rt = _rt(memo)
    rt.capture(kw)
    idx = kw.get("idep_index")
    metrics.MANAGED.set(len(idx) if idx is not None else 0)


# -- the reconcile ---------------------------------------------------------------------
@kopf.on.resume(*IDEP)
@kopf.on.create(*IDEP)
@kopf.on.update(*IDEP, field="spec")
async def reconcile(
    body: kopf.Body,
    meta: kopf.Meta,
    spec: kopf.Spec,
    namespace: str | None,
    name: str,
    reason: str,
    retry: int,
    memo: Any,
    logger: Any,
    **kw: Any,
) -> None:
    rt = _rt(memo)
    rt.capture(kw)
    key = _key(namespace, name)
    raw = plain(body)
    cause = str(reason)
    try:
        parsed = api.InferenceDeploymentSpec.model_validate(dict(spec))
    except ValidationError as e:
        msg = "; ".join(format_errors(e, root="spec"))
        rt.errors[key] = ("InvalidSpec", msg)
        await rt.refresh(key, body=raw)
        metrics.RECONCILES.labels(cause, "invalid").inc()
        raise kopf.PermanentError(f"invalid spec: {msg}") from e

    async def applied(child: str) -> None:
        logger.debug(f"applied {child}")

    try:
        result = await rt.reconcile(
            key, raw, parsed, cause, applied, existing=rt.indices.deployment(key)
        )
    except ApiError as e:
        metrics.RECONCILES.labels(cause, "error").inc()
        if e.status in (400, 422):  # the API server refuses what we rendered from this spec
            rt.errors[key] = ("InvalidSpec", e.message)
            await rt.refresh(key, body=raw)
            raise kopf.PermanentError(e.message) from e
        rt.errors[key] = ("ReconcileFailed", f"{e} (retry {retry + 1})")
        await rt.refresh(key, body=raw)
        raise kopf.TemporaryError(str(e), delay=min(30, 2 ** min(retry, 5))) from e
    await rt.refresh(key, body=raw, deployment=result.deployment)
