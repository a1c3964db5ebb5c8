"""The reconcile against an in-memory API: idempotence and replica-count ownership."""

from __future__ import annotations

import copy
from typing import Any

from fakekube import FakeKube
from infleet_operator import api, apply, naming
from infleet_operator.kube import ApiError

SPEC: dict[str, Any] = {
    "model": {"name": "mlp", "source": "builtin://mlp"},
    "engine": {"device": "cpu"},
    "replicas": 2,
}
KEY = ("Deployment", "ns", "m")


def body(spec: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "m", "namespace": "ns", "uid": "u-1", "generation": 1},
        "spec": spec or SPEC,
    }


async def reconcile(kube: FakeKube, spec: dict[str, Any] | None = None) -> apply.ApplyResult:
    b = body(spec)
    return await apply.reconcile_children(
        kube, b, api.InferenceDeploymentSpec.model_validate(b["spec"])
    )


def versions(kube: FakeKube) -> dict[Any, str]:
    return {k: o["metadata"]["resourceVersion"] for k, o in kube.objects.items()}


def auto(min_r: int = 2, max_r: int = 6, **extra: Any) -> dict[str, Any]:
    spec = copy.deepcopy(SPEC)
    spec["autoscaling"] = {"enabled": True, "minReplicas": min_r, "maxReplicas": max_r, **extra}
    return spec


async def test_creates_all_children_then_is_idempotent() -> None:
    kube = FakeKube()
    first = await reconcile(kube)
    assert first.deployment_changed
    assert sorted(k[0] for k in kube.objects) == [
        "ConfigMap",
        "Deployment",
        "PodDisruptionBudget",
        "Service",
        "Service",
    ]
    before = versions(kube)
    second = await reconcile(kube)
    assert versions(kube) == before
    assert not second.deployment_changed and not second.reclaimed


async def test_spec_change_changes_the_deployment() -> None:
    kube = FakeKube()
    await reconcile(kube)
    spec = copy.deepcopy(SPEC)
    spec["batching"] = {"maxBatchSize": 8}
    result = await reconcile(kube, spec)
    assert result.deployment_changed


async def test_autoscaling_off_owns_replicas() -> None:
    kube = FakeKube()
    await reconcile(kube)
    assert kube.objects[KEY]["spec"]["replicas"] == 2
    assert apply.replicas_owners(kube.objects[KEY]) == {naming.FIELD_MANAGER}
    await reconcile(kube, dict(SPEC, replicas=4))
    assert kube.objects[KEY]["spec"]["replicas"] == 4


async def test_autoscaling_on_seeds_min_and_never_resets() -> None:
    kube = FakeKube()
    result = await reconcile(kube, auto(min_r=3))
    assert result.replicas_seeded == 3
    dep = kube.objects[KEY]
    assert dep["spec"]["replicas"] == 3
    assert apply.replicas_owners(dep) == {naming.AUTOSCALER_MANAGER}
    # the autoscaler decides 5
    await apply.set_replicas(kube, dep, 5)
    before = versions(kube)
    again = await reconcile(kube, auto(min_r=3))
    assert kube.objects[KEY]["spec"]["replicas"] == 5
    assert again.replicas_seeded is None
    assert versions(kube) == before  # nothing written


async def test_bounds_change_clamps_under_the_autoscaler_manager() -> None:
    kube = FakeKube()
    await reconcile(kube, auto(min_r=2, max_r=6))
    await apply.set_replicas(kube, kube.objects[KEY], 6)
    result = await reconcile(kube, auto(min_r=2, max_r=4))
    assert result.replicas_seeded == 4
    assert kube.objects[KEY]["spec"]["replicas"] == 4
    assert apply.replicas_owners(kube.objects[KEY]) == {naming.AUTOSCALER_MANAGER}


async def test_switching_modes_hands_the_count_over() -> None:
    kube = FakeKube()
    await reconcile(kube)  # off: 2, ours
    result = await reconcile(kube, auto(min_r=1, max_r=8))  # on: keep the 2 pods running
    assert result.replicas_seeded == 2
    assert kube.objects[KEY]["spec"]["replicas"] == 2
    assert apply.replicas_owners(kube.objects[KEY]) == {naming.AUTOSCALER_MANAGER}
    await apply.set_replicas(kube, kube.objects[KEY], 7)
    result = await reconcile(kube, dict(SPEC, replicas=3))  # off again: spec.replicas wins
    assert kube.objects[KEY]["spec"]["replicas"] == 3
    assert apply.replicas_owners(kube.objects[KEY]) == {naming.FIELD_MANAGER}
    assert "Deployment/m" in result.reclaimed


async def test_conflict_is_forced_and_reported() -> None:
    kube = FakeKube()
    await reconcile(kube)
    kube.conflict_once.add("Service/m")
    result = await reconcile(kube)
    assert result.reclaimed == ["Service/m"]


async def test_other_errors_propagate() -> None:
    class Failing(FakeKube):
        async def apply(self, obj: dict[str, Any], *, manager: str, force: bool) -> Any:
            raise ApiError(500, {"message": "etcd down"})

    try:
        await reconcile(Failing())
    except ApiError as e:
        assert e.status == 500
    else:  # pragma: no cover
        raise AssertionError("expected ApiError")


def test_seed_rules() -> None:
    on = api.InferenceDeploymentSpec.model_validate(auto(min_r=2, max_r=4))
    off = api.InferenceDeploymentSpec.model_validate(SPEC)
    assert apply.seed_replicas(off, None) is None
    assert apply.seed_replicas(on, None) == 2
    owned = {
        "spec": {"replicas": 3},
        "metadata": {
            "managedFields": [
                {"manager": naming.AUTOSCALER_MANAGER, "fieldsV1": {"f:spec": {"f:replicas": {}}}}
            ]
        },
    }
    assert apply.seed_replicas(on, owned) is None
    assert apply.seed_replicas(on, {**owned, "spec": {"replicas": 9}}) == 4
    foreign = {"spec": {"replicas": 3}, "metadata": {"managedFields": []}}
    assert apply.seed_replicas(on, foreign) == 3


async def test_cached_deployment_saves_the_read() -> None:
    kube = FakeKube()
    await reconcile(kube)
    cached = kube.objects[KEY]
    kube.calls.clear()
    b = body()
    result = await apply.reconcile_children(
        kube, b, api.InferenceDeploymentSpec.model_validate(b["spec"]), existing=cached
    )
    assert ("apps", "deployments", "get") not in kube.calls
    assert not result.deployment_changed
    # autoscaling on: ownership needs managedFields, so it reads fresh anyway
    on = auto()
    await apply.reconcile_children(
        kube, body(on), api.InferenceDeploymentSpec.model_validate(on), existing=cached
    )
    assert ("apps", "deployments", "get") in kube.calls


async def test_edited_child_is_restored() -> None:
    import asyncio

    from infleet_operator.runtime import Runtime

    kube = FakeKube()
    b = body()
    result = await reconcile(kube)
    rt = Runtime(kube=kube, drift_delay=0.0)  # type: ignore[arg-type]
    rt.indices.ideps = {("ns", "m"): [b]}
    rt.generations[("ns", "m")] = 1
    rt.note_applied(("ns", "m"), result.deployment)
    rt.check_drift(("ns", "m"), kube.objects[KEY])  # our own write: nothing to do
    assert not rt._drift
    # someone scales the Deployment by hand
    await kube.apply(apply.replicas_patch(kube.objects[KEY], 7), manager="kubectl", force=True)
    assert kube.objects[KEY]["spec"]["replicas"] == 7
    rt.check_drift(("ns", "m"), kube.objects[KEY])
    await asyncio.wait_for(rt._drift[("ns", "m")], 5)
    assert kube.objects[KEY]["spec"]["replicas"] == 2
    await rt.close()


async def test_autoscaler_writes_are_not_drift() -> None:
    """Drift is a change to fields our field manager owns: the autoscaler's replicas
    (its own manager) are not, with no bookkeeping of its writes anywhere."""
    from infleet_operator.runtime import Runtime

    kube = FakeKube()
    spec = auto(min_r=2, max_r=6)
    result = await reconcile(kube, spec)
    rt = Runtime(kube=kube, drift_delay=0.0)  # type: ignore[arg-type]
    rt.note_applied(("ns", "m"), result.deployment)
    await apply.set_replicas(kube, kube.objects[KEY], 5)  # what the autoscaler's timer calls
    assert kube.objects[KEY]["spec"]["replicas"] == 5
    rt.check_drift(("ns", "m"), kube.objects[KEY])
    assert not rt._drift
    # the same count written by someone else, who takes a field the operator owns
    b = body()
    result = await reconcile(kube)  # autoscaling off: the operator owns replicas again
    rt.note_applied(("ns", "m"), result.deployment)
    rt.indices.ideps = {("ns", "m"): [b]}
    rt.generations[("ns", "m")] = 1
    await kube.apply(apply.replicas_patch(kube.objects[KEY], 5), manager="kubectl", force=True)
    rt.check_drift(("ns", "m"), kube.objects[KEY])
    assert rt._drift
    await rt.close()


def test_owned_fields_ignore_other_managers_and_subresources() -> None:
    def entry(manager: str, fields: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return {"manager": manager, "operation": "Apply", "fieldsV1": fields, **kw}

    ours = entry(naming.FIELD_MANAGER, {"f:spec": {"f:replicas": {}}})
    dep = {"metadata": {"managedFields": [ours, entry("kubectl", {"f:spec": {}})]}}
    base = apply.owned_fields(dep)
    assert base and "replicas" in base
    dep["metadata"]["managedFields"].append(
        entry(naming.FIELD_MANAGER, {"f:status": {}}, subresource="status")
    )
    assert apply.owned_fields(dep) == base
    assert apply.owned_fields({"metadata": {}}) == ""
