"""The operator on the real control plane, its worker pods run by the node agent.

The operator runs as a host subprocess with a ServiceAccount token bound to the
ClusterRole of manifests/base/rbac.yaml. Clients reach workers by pod IP, found
in EndpointSlices (nothing routes ClusterIPs here).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from fleet.endpoints import EndpointFollower, EndpointWatcher
from fleet.operator import (
    GROUP,
    PLURAL,
    ROOT,
    VERSION,
    OperatorProcess,
    install_operator_prereqs,
    kubectl,
)
from kube_harness.testing import unique, wait_for
from testkit import free_port

pytestmark = pytest.mark.cluster

LABEL = "infleet.dev/deployment"
WIDTH = 64


# -- fixtures ------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def api(cluster: Any) -> Any:
    return cluster.api_client()


@pytest.fixture(scope="module")
def op_kubeconfig(cluster: Any, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return install_operator_prereqs(cluster, tmp_path_factory.mktemp("operator"))


@pytest.fixture(scope="module")
def operator(op_kubeconfig: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    op = OperatorProcess(op_kubeconfig, tmp_path_factory.mktemp("oplogs"))
    op.start()
    op.wait_log("Resuming operations", timeout=60)
    yield op
    op.stop()
    print(f"\n[operator log tail]\n{op.text()[-4000:]}")


@pytest.fixture
def ns(api: Any) -> Iterator[str]:
    name = unique("e2e-op")
    core = client.CoreV1Api(api)
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    yield name
    core.delete_namespace(name)


# -- helpers -------------------------------------------------------------------------------
def manifest(name: str, **spec_patch: Any) -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "manifests/examples/cpu-minimal.yaml").read_text())
    doc["metadata"] = {"name": name}
    doc["spec"]["model"]["parameters"] = {"width": str(WIDTH), "depth": "2"}
    doc["spec"]["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    doc["spec"]["terminationGracePeriodSeconds"] = 20
    for key, value in spec_patch.items():
        doc["spec"][key] = value
    return dict(doc)


def co(api: Any) -> Any:
    return client.CustomObjectsApi(api)


def create(api: Any, ns: str, doc: dict[str, Any]) -> None:
    co(api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc)


def get(api: Any, ns: str, name: str) -> dict[str, Any]:
    return dict(co(api).get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name))


def patch_spec(api: Any, ns: str, name: str, spec: dict[str, Any]) -> None:
    co(api).patch_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name, {"spec": spec})


def cond(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == type_:
            return dict(c)
    return {}


def wait_ready(api: Any, ns: str, name: str, generation: int = 1, timeout: float = 150) -> dict:
    def ok() -> dict[str, Any] | None:
        obj = get(api, ns, name)
        st = obj.get("status") or {}
        if st.get("observedGeneration") == generation and cond(obj, "Ready").get("status") == (
            "True"
        ):
            return obj
        return None

    return wait_for(ok, timeout=timeout, interval=0.3, what=f"{ns}/{name} Ready")


def children(api: Any, ns: str, name: str) -> dict[str, list[str]]:
    core, apps, policy = client.CoreV1Api(api), client.AppsV1Api(api), client.PolicyV1Api(api)
    sel = f"{LABEL}={name}"
    return {
        "Deployment": [
            d.metadata.name for d in apps.list_namespaced_deployment(ns, label_selector=sel).items
        ],
        "ReplicaSet": [
            r.metadata.name
            for r in apps.list_namespaced_replica_set(ns, label_selector=sel).items
            if (r.spec.replicas or 0) > 0 or (r.status.replicas or 0) > 0
        ],
        "Service": sorted(
            s.metadata.name for s in core.list_namespaced_service(ns, label_selector=sel).items
        ),
        "ConfigMap": [
            c.metadata.name for c in core.list_namespaced_config_map(ns, label_selector=sel).items
        ],
        "PodDisruptionBudget": [
            p.metadata.name
            for p in policy.list_namespaced_pod_disruption_budget(ns, label_selector=sel).items
        ],
        "Pod": [p.metadata.name for p in core.list_namespaced_pod(ns, label_selector=sel).items],
    }


def live_pods(api: Any, ns: str, name: str) -> list[str]:
    pods = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"{LABEL}={name}").items
    return [p.metadata.name for p in pods if p.metadata.deletion_timestamp is None]


def expected_children(name: str) -> dict[str, list[str]]:
    return {
        "Deployment": [name],
        "Service": sorted([name, f"{name}-headless"]),
        "ConfigMap": [f"{name}-config"],
        "PodDisruptionBudget": [name],
    }


def infer(ip: str, x: np.ndarray, timeout: float = 10) -> np.ndarray:
    import tritonclient.http as httpclient

    c = httpclient.InferenceServerClient(url=f"{ip}:8000", network_timeout=timeout)
    try:
        inp = httpclient.InferInput("input", list(x.shape), "FP32")
        inp.set_data_from_numpy(x)
        out = c.infer("mlp", [inp])
        result = out.as_numpy("output")
        assert result is not None
        return np.asarray(result)
    finally:
        c.close()


def reference(spec: dict[str, Any], x: np.ndarray) -> np.ndarray:
    """The same builtin model run directly with torch, as the worker would load it."""
    from infleet_worker.config import WorkerConfig
    from infleet_worker.engine.loader import load_engine
    from infleet_worker.tensors import Tensor

    cfg = WorkerConfig.model_validate(
        {k: spec[k] for k in ("model", "engine", "batching") if k in spec}
    )
    engine = load_engine(cfg)
    try:
        out = engine.run({"input": Tensor("FP32", x)})["output"]
        return np.asarray(out.array, dtype=np.float32)
    finally:
        engine.close()


def metric(ip: str, name: str) -> float:
    text = urllib.request.urlopen(f"http://{ip}:8002/metrics", timeout=5).read().decode()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def pod_ips(api: Any, ns: str, name: str) -> list[str]:
    return EndpointWatcher(api, ns, name).refresh()


def parse_ts(s: str) -> float:
    return time.mktime(time.strptime(s, "%Y-%m-%dT%H:%M:%SZ"))


# -- tests ---------------------------------------------------------------------------------
def test_cpu_minimal_serves_correct_outputs(
    api: Any, operator: OperatorProcess, ns: str, cluster: Any
) -> None:
    path = ROOT / "manifests/examples/cpu-minimal.yaml"
    doc = yaml.safe_load(path.read_text())
    t0 = time.monotonic()
    out = kubectl(cluster, "apply", "--server-side", "-n", ns, "-f", str(path))
    assert "serverside-applied" in out
    obj = wait_ready(api, ns, "mlp-cpu")
    print(f"\napply -> Ready: {time.monotonic() - t0:.1f}s")
    st = obj["status"]
    assert st["readyReplicas"] == 2 and st["desiredReplicas"] == 2 and st["replicas"] == 2
    assert st["endpoint"]["http"] == f"http://mlp-cpu.{ns}.svc:8000"
    assert st["endpoint"]["grpcHeadless"] == f"dns:///mlp-cpu-headless.{ns}.svc:8001"
    assert (
        st["selector"] == "app.kubernetes.io/instance=mlp-cpu,app.kubernetes.io/name=infleet-worker"
    )
    assert st["gpusPerPod"] == 0 and st["podStartSeconds"] > 0
    print(f"podStartSeconds (create -> Ready): {st['podStartSeconds']}")
    assert not obj["metadata"].get("finalizers"), "the operator must add no finalizer"
    assert children(api, ns, "mlp-cpu")["Deployment"] == ["mlp-cpu"]

    # status follows pod readiness promptly (timestamps have 1 s resolution)
    pods = client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"{LABEL}=mlp-cpu").items
    last_pod_ready = max(
        parse_ts(c.last_transition_time.strftime("%Y-%m-%dT%H:%M:%SZ"))
        for p in pods
        for c in p.status.conditions
        if c.type == "Ready"
    )
    lag = parse_ts(cond(obj, "Ready")["lastTransitionTime"]) - last_pod_ready
    print(f"status lag behind pod readiness: {lag:.0f}s")
    assert lag <= 3

    # inference through each Ready pod's IP matches a direct torch forward
    # EndpointSlices follow pod readiness a moment later (the controller manager)
    ips = wait_for(
        lambda: found if len(found := pod_ips(api, ns, "mlp-cpu")) == 2 else None,
        timeout=20,
        interval=0.3,
        what="both Ready pods in the EndpointSlice",
    )
    assert len(ips) == 2
    x = np.random.default_rng(0).standard_normal((3, 256)).astype(np.float32)
    want = reference(doc["spec"], x)
    for ip in ips:
        np.testing.assert_allclose(infer(ip, x), want, rtol=1e-4, atol=1e-4)

    # events say what happened
    evs = client.CoreV1Api(api).list_namespaced_event(ns).items
    reasons = {e.reason for e in evs if e.involved_object.kind == "InferenceDeployment"}
    assert {"Created", "Ready"} <= reasons


def test_spec_change_rolls_without_failed_requests(
    api: Any, operator: OperatorProcess, ns: str
) -> None:
    name = "roll"
    create(api, ns, manifest(name))
    wait_ready(api, ns, name)
    before = set(children(api, ns, name)["Pod"])
    x = np.random.default_rng(1).standard_normal((2, WIDTH)).astype(np.float32)

    def send(ip: str) -> None:
        infer(ip, x, timeout=15)

    traffic = EndpointFollower(api, ns, name, send).start(clients=2)
    try:
        time.sleep(2)
        new_spec = {
            "engine": {"precision": "bf16"},
            "batching": {"maxBatchSize": 8, "maxQueueDelayMicroseconds": 500},
        }
        patch_spec(api, ns, name, new_spec)
        seen_progressing = wait_for(
            lambda: cond(get(api, ns, name), "Progressing").get("status") == "True" or None,
            timeout=30,
            interval=0.1,
            what="Progressing=True",
        )
        assert seen_progressing
        obj = wait_ready(api, ns, name, generation=2, timeout=240)
        time.sleep(2)
    finally:
        traffic.stop()
    assert cond(obj, "Progressing")["status"] == "False"
    after = set(live_pods(api, ns, name))
    assert len(after) == 2 and not (after & before), "every pod was replaced"
    print(
        f"\nroll: {traffic.ok} requests ok, {len(traffic.failures)} failed, "
        f"{len(traffic.seen)} pod IPs served"
    )
    assert traffic.ok > 20
    assert traffic.failures == []
    # new pods serve the new precision
    spec = manifest(name)["spec"]
    spec["engine"] = {**spec["engine"], "precision": "bf16"}
    spec["batching"] = {"maxBatchSize": 8, "maxQueueDelayMicroseconds": 500}
    want = reference(spec, x)
    for ip in pod_ips(api, ns, name):
        np.testing.assert_allclose(infer(ip, x), want, rtol=2e-2, atol=2e-2)


def test_delete_garbage_collects_everything(
    api: Any, operator: OperatorProcess, ns: str, cluster: Any
) -> None:
    name = "gone"
    create(api, ns, manifest(name, replicas=1))
    wait_ready(api, ns, name)
    assert {k: v for k, v in children(api, ns, name).items() if k in expected_children(name)} == (
        expected_children(name)
    )
    co(api).delete_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)

    def empty() -> bool:
        left = {k: v for k, v in children(api, ns, name).items() if v}
        return not left

    wait_for(empty, timeout=120, interval=0.5, what="children garbage-collected")
    wait_for(
        lambda: not [k for k in cluster.agent.processes() if k.startswith(f"{ns}/")],
        timeout=60,
        what="worker processes gone",
    )


@contextlib.contextmanager
def services_refused(api: Any, ns: str) -> Iterator[None]:
    """While open, the API server refuses Service writes in ``ns`` (403, a
    ValidatingAdmissionPolicy): a reconcile stops between the Deployment and the Services."""
    name = f"refuse-services-{ns}"
    adm = client.AdmissionregistrationV1Api(api)
    adm.create_validating_admission_policy(
        {
            "metadata": {"name": name},
            "spec": {
                "failurePolicy": "Fail",
                "matchConstraints": {
                    "resourceRules": [
                        {
                            "apiGroups": [""],
                            "apiVersions": ["v1"],
                            "operations": ["CREATE", "UPDATE"],
                            "resources": ["services"],
                        }
                    ]
                },
                "validations": [
                    {
                        "expression": "false",
                        "message": "held back by the test",
                        "reason": "Forbidden",
                    }
                ],
            },
        }
    )
    adm.create_validating_admission_policy_binding(
        {
            "metadata": {"name": name},
            "spec": {
                "policyName": name,
                "validationActions": ["Deny"],
                "matchResources": {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}
                },
            },
        }
    )
    probe = {"metadata": {"name": "probe"}, "spec": {"ports": [{"port": 80}]}}

    def refused() -> bool:
        try:
            client.CoreV1Api(api).create_namespaced_service(ns, probe, dry_run="All")
        except ApiException as e:
            return e.status == 403
        return False

    try:
        wait_for(refused, timeout=30, what="the policy in force")
        yield
    finally:
        adm.delete_validating_admission_policy_binding(name)
        adm.delete_validating_admission_policy(name)
        wait_for(lambda: not refused(), timeout=30, what="the policy gone")


def test_operator_killed_mid_reconcile_converges(
    api: Any, operator: OperatorProcess, ns: str
) -> None:
    name = "crash"
    with services_refused(api, ns):
        create(api, ns, manifest(name, replicas=1))
        wait_for(
            lambda: cond(get(api, ns, name), "Degraded").get("reason") == "ReconcileFailed" or None,
            timeout=60,
            what="the reconcile stopped at the Services",
        )
        operator.kill()  # the Deployment applied, the Services not
    partial = children(api, ns, name)
    assert partial["Deployment"] == [name] and partial["Service"] == []
    operator.start()
    operator.wait_log("Resuming operations", timeout=60)
    obj = wait_ready(api, ns, name)
    got = children(api, ns, name)
    assert {k: v for k, v in got.items() if k in expected_children(name)} == expected_children(name)
    assert len(got["ReplicaSet"]) == 1 and len(got["Pod"]) == 1
    assert obj["status"]["observedGeneration"] == 1

    # and a restart of a converged operator writes nothing (SSA no-op)
    def versions() -> dict[str, str]:
        core, apps = client.CoreV1Api(api), client.AppsV1Api(api)
        sel = f"{LABEL}={name}"
        objs = [
            *apps.list_namespaced_deployment(ns, label_selector=sel).items,
            *core.list_namespaced_service(ns, label_selector=sel).items,
            *core.list_namespaced_config_map(ns, label_selector=sel).items,
            *client.PolicyV1Api(api)
            .list_namespaced_pod_disruption_budget(ns, label_selector=sel)
            .items,
        ]
        return {f"{o.kind}/{o.metadata.name}": o.metadata.resource_version for o in objs}

    time.sleep(2)
    rv = versions()
    mark = len(operator.text())
    operator.stop()
    operator.start()
    operator.wait_log("resume: applied generation 1", timeout=60, since=mark)
    time.sleep(2)
    assert versions() == rv


def test_replicas_shared_cache(
    api: Any, operator: OperatorProcess, ns: str, cluster: Any, tmp_path: Path
) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server not installed")
    port = free_port()
    redis = subprocess.Popen(
        [
            binary,
            "--bind",
            cluster.gateway,
            "--port",
            str(port),
            "--protected-mode",
            "no",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        name = "cached"
        create(
            api,
            ns,
            manifest(
                name,
                replicas=2,
                cache={"mode": "output", "redis": {"url": f"redis://{cluster.gateway}:{port}/0"}},
            ),
        )
        wait_ready(api, ns, name)
        a, b = pod_ips(api, ns, name)
        x = np.random.default_rng(7).standard_normal((1, WIDTH)).astype(np.float32)
        hits_b = metric(b, "infleet_cache_hits_total")
        first = infer(a, x)
        wait_for(
            lambda: metric(a, "infleet_cache_misses_total") >= 1, timeout=10, what="miss on pod a"
        )
        second = infer(b, x)
        np.testing.assert_array_equal(first, second)
        assert metric(b, "infleet_cache_hits_total") == hits_b + 1, (
            "pod b answered from pod a's entry"
        )
    finally:
        redis.terminate()
        redis.wait(10)


def test_leader_election_two_replicas(
    api: Any, operator: OperatorProcess, ns: str, op_kubeconfig: Path, tmp_path: Path
) -> None:
    operator.stop()
    high = OperatorProcess(op_kubeconfig, tmp_path, name="op-high", args=["--priority", "200"])
    low = OperatorProcess(op_kubeconfig, tmp_path, name="op-low", args=["--priority", "100"])
    try:
        high.start()
        high.wait_log("Resuming operations", timeout=60)
        low.start()
        low.wait_log("Initial authentication has finished", timeout=60)
        time.sleep(5)
        assert "Resuming operations" not in low.text(), "the low-priority replica must stay paused"
        name = "leader"
        # an image nothing can pull: no worker processes, the reconcile is what we watch
        create(api, ns, manifest(name, replicas=1, image="example.invalid/none:1"))
        high.wait_log("create: applied generation 1", timeout=60)
        assert "create: applied" not in low.text()
        wait_for(
            lambda: (
                cond(get(api, ns, name), "Degraded").get("reason") == "ImagePullBackOff" or None
            ),
            timeout=60,
            what="Degraded=ImagePullBackOff",
        )
        msg = cond(get(api, ns, name), "Degraded")["message"]
        assert "example.invalid/none:1" in msg
        high.kill()  # no goodbye: the peer must notice the silence
        t0 = time.monotonic()
        low.wait_log("Resuming operations", timeout=90)
        print(f"\nfail-over after SIGKILL: {time.monotonic() - t0:.1f}s")
        patch_spec(api, ns, name, {"replicas": 2})
        low.wait_log("update: applied generation 2", timeout=60)
        wait_for(
            lambda: (
                client.AppsV1Api(api).read_namespaced_deployment(name, ns).spec.replicas == 2
                or None
            ),
            timeout=30,
            what="replicas 2",
        )
    finally:
        high.stop()
        low.stop()
        operator.start()
        operator.wait_log("Resuming operations", timeout=90)


def test_autoscaler_owns_replicas_when_enabled(
    api: Any, operator: OperatorProcess, ns: str
) -> None:
    name = "auto"
    doc = manifest(
        name,
        image="example.invalid/none:1",
        autoscaling={"enabled": True, "minReplicas": 2, "maxReplicas": 5},
    )
    create(api, ns, doc)
    apps = client.AppsV1Api(api)
    dep = wait_for(
        lambda: ((d := apps.read_namespaced_deployment(name, ns)).spec.replicas == 2 and d) or None,
        timeout=60,
        what="seeded to minReplicas",
    )
    owners = {
        m.manager
        for m in dep.metadata.managed_fields
        if "f:replicas" in (m.fields_v1 or {}).get("f:spec", {})
    }
    assert owners == {"infleet-autoscaler"}
    # the autoscaler decides 4 (same call as its timer makes)
    body = {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": 4},
    }
    apps.patch_namespaced_deployment(
        name,
        ns,
        body,
        field_manager="infleet-autoscaler",
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    patch_spec(api, ns, name, {"batching": {"maxBatchSize": 8}})
    wait_for(
        lambda: get(api, ns, name).get("status", {}).get("observedGeneration") == 2 or None,
        timeout=60,
        what="generation 2 reconciled",
    )
    assert apps.read_namespaced_deployment(name, ns).spec.replicas == 4
    assert get(api, ns, name)["status"]["desiredReplicas"] == 4
    assert get(api, ns, name)["spec"]["replicas"] == doc["spec"]["replicas"]  # spec untouched


def test_edited_child_is_restored(
    api: Any, operator: OperatorProcess, ns: str, cluster: Any
) -> None:
    name = "edited"
    create(api, ns, manifest(name, replicas=1, image="example.invalid/none:1"))
    apps = client.AppsV1Api(api)
    wait_for(
        lambda: get(api, ns, name).get("status", {}).get("observedGeneration") == 1 or None,
        timeout=60,
        what="reconciled",
    )
    kubectl(cluster, "scale", "-n", ns, f"deployment/{name}", "--replicas=3")
    wait_for(
        lambda: apps.read_namespaced_deployment(name, ns).spec.replicas == 1 or None,
        timeout=30,
        what="replicas restored to spec.replicas",
    )
    core = client.CoreV1Api(api)
    wait_for(  # posted after the re-apply: it may land a moment after the replicas do
        lambda: (
            any(e.reason == "ChildEdited" for e in core.list_namespaced_event(ns).items) or None
        ),
        timeout=30,
        what="a ChildEdited Event",
    )


def test_drift_is_a_change_to_fields_the_operator_owns(
    api: Any, operator: OperatorProcess, ns: str, cluster: Any
) -> None:
    """The autoscaler's replicas are not drift (its own field manager); a user's edit
    of the image (the operator's) is undone, with an Event. Nothing records the
    autoscaler's writes: drift is read from managedFields."""
    name = "drift"
    image = "example.invalid/none:1"
    auto = {"enabled": True, "minReplicas": 1, "maxReplicas": 5}
    auto["scaleDownStabilizationSeconds"] = 600  # the timer holds what the test writes
    create(api, ns, manifest(name, image=image, autoscaling=auto))
    apps = client.AppsV1Api(api)
    core = client.CoreV1Api(api)
    wait_for(
        lambda: get(api, ns, name).get("status", {}).get("observedGeneration") == 1 or None,
        timeout=60,
        what="reconciled",
    )
    mark = len(operator.text())
    drift_line = "edited outside the operator"

    def drift_events() -> list[str]:
        return [
            f"{e.reason}: {e.message}"
            for e in core.list_namespaced_event(ns).items
            if e.reason == "ChildEdited" or "edited outside" in (e.message or "")
        ]

    # the autoscaler scales: the write its timer makes (apply.set_replicas)
    apps.patch_namespaced_deployment(
        name,
        ns,
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
         "spec": {"replicas": 3}},
        field_manager="infleet-autoscaler",
        force=True,
        _content_type="application/apply-patch+yaml",
    )  # fmt: skip
    time.sleep(2.5)  # a drift correction would start 1 s after the watch event
    assert drift_line not in operator.text()[mark:]
    assert drift_events() == []
    assert apps.read_namespaced_deployment(name, ns).spec.replicas == 3

    # a user edits a field the operator owns
    kubectl(cluster, "set", "image", "-n", ns, f"deployment/{name}", "worker=example.invalid/x:2")
    wait_for(
        lambda: (
            apps.read_namespaced_deployment(name, ns).spec.template.spec.containers[0].image
            == image
            or None
        ),
        timeout=30,
        what="the image restored",
    )
    events = wait_for(drift_events, timeout=30, what="a ChildEdited Event")
    assert any(e.startswith("ChildEdited: Deployment/drift") for e in events), events
    assert drift_line in operator.text()[mark:]
    assert apps.read_namespaced_deployment(name, ns).spec.replicas == 3  # still the autoscaler's


def test_unschedulable_gpus_are_reported(api: Any, operator: OperatorProcess, ns: str) -> None:
    name = "toobig"
    doc = manifest(name, replicas=1)
    doc["spec"]["engine"] = {"device": "cuda", "pipelineParallel": 8}
    create(api, ns, doc)
    obj = wait_for(
        lambda: (
            (
                (o := get(api, ns, name))
                and cond(o, "Degraded").get("reason") == "Unschedulable"
                and o
            )
            or None
        ),
        timeout=60,
        what="Degraded=Unschedulable",
    )
    msg = cond(obj, "Degraded")["message"]
    assert "nvidia.com/gpu" in msg and "pipelineParallel" in msg
    assert obj["status"]["gpusPerPod"] == 8
    assert cond(obj, "Ready")["status"] == "False"
