"""Rendering of an InferenceDeployment's children: pure, deterministic, complete."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from infleet_operator import api, children, naming
from infleet_worker.config import REDIS_URL_ENV, WorkerConfig

ROOT = Path(__file__).resolve().parents[1]


def body(spec: dict[str, Any] | None = None, name: str = "mlp-cpu") -> dict[str, Any]:
    doc = yaml.safe_load((ROOT / "manifests/examples/cpu-minimal.yaml").read_text())
    if spec is not None:
        doc["spec"] = spec
    doc["metadata"] = {"name": name, "namespace": "ml", "uid": "uid-1", "generation": 1}
    return dict(doc)


def container(c: children.Children) -> dict[str, Any]:
    return c.deployment["spec"]["template"]["spec"]["containers"][0]


def test_every_child_is_owned_and_labelled() -> None:
    c = children.render(body())
    for obj in c.in_apply_order():
        md = obj["metadata"]
        assert md["namespace"] == "ml"
        assert md["ownerReferences"] == [
            {
                "apiVersion": "infleet.dev/v1alpha1",
                "kind": "InferenceDeployment",
                "name": "mlp-cpu",
                "uid": "uid-1",
                "controller": True,
            }
        ]
        assert md["labels"] == {
            "app.kubernetes.io/name": "infleet-worker",
            "app.kubernetes.io/instance": "mlp-cpu",
            "app.kubernetes.io/managed-by": "infleet-operator",
            "infleet.dev/deployment": "mlp-cpu",
        }
    assert [o["kind"] for o in c.in_apply_order()] == [
        "ConfigMap",
        "Deployment",
        "Service",
        "Service",
        "PodDisruptionBudget",
    ]


def test_deployment_shape() -> None:
    c = children.render(body())
    d = c.deployment["spec"]
    assert d["replicas"] == 2
    assert d["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
    }
    assert d["selector"]["matchLabels"] == naming.selector_labels("mlp-cpu")
    tpl = d["template"]
    assert set(naming.selector_labels("mlp-cpu").items()) <= set(tpl["metadata"]["labels"].items())
    assert tpl["metadata"]["annotations"][naming.CONFIG_HASH] == c.config_hash
    ctr = container(c)
    assert ctr["command"] == ["infleet-worker", "--config", "/etc/infleet/worker.json"]
    assert ctr["image"] == api.DEFAULT_IMAGE
    assert [(p["name"], p["containerPort"]) for p in ctr["ports"]] == [
        ("http", 8000),
        ("grpc", 8001),
        ("metrics", 8002),
    ]
    assert ctr["readinessProbe"]["httpGet"] == {"path": "/v2/health/ready", "port": "http"}
    assert ctr["livenessProbe"]["httpGet"] == {"path": "/v2/health/live", "port": "http"}
    assert ctr["lifecycle"]["preStop"]["sleep"]["seconds"] == 3
    env = {e["name"]: e for e in ctr["env"]}
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_IP"]["valueFrom"]["fieldRef"]["fieldPath"] == "status.podIP"
    assert ctr["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}}
    pod = tpl["spec"]
    assert pod["terminationGracePeriodSeconds"] == 60
    assert pod["volumes"][0] == {
        "name": "infleet-config",
        "configMap": {"name": "mlp-cpu-config"},
    }


def test_config_map_is_the_worker_config() -> None:
    b = body()
    c = children.render(b)
    text = c.config_map["data"]["worker.json"]
    cfg = WorkerConfig.model_validate(json.loads(text))
    spec = api.InferenceDeploymentSpec.model_validate(b["spec"])
    assert cfg.model == spec.model and cfg.engine == spec.engine
    assert cfg.batching == spec.batching and cfg.cache == spec.cache
    # preStop (3 s) + drain (5 s) + in-flight fit in the grace period
    assert cfg.server.drain_seconds == 5.0


@pytest.mark.parametrize(
    ("shedding", "want"),
    [({}, None), ({"enabled": True}, 2 * 7.0), ({"enabled": True, "queueDepthPerReplica": 3}, 3)],
)
def test_shedding_reaches_the_worker(shedding: dict[str, Any], want: float | None) -> None:
    """overload.shedding becomes the worker's shedQueueDepth (default twice the target
    queue), the number the simulator sheds at too."""
    b = body()
    b["spec"]["autoscaling"] = {
        "targetQueueDepthPerReplica": 7,
        "overload": {"shedding": shedding},
    }
    text = children.render(b).config_map["data"]["worker.json"]
    assert WorkerConfig.model_validate(json.loads(text)).server.shed_queue_depth == want


def test_adaptive_batching_reaches_the_worker() -> None:
    b = body()
    b["spec"]["autoscaling"] = {
        "targetQueueDepthPerReplica": 7,
        "overload": {"adaptiveBatching": {"enabled": True, "maxBatchSize": 64}},
    }
    text = children.render(b).config_map["data"]["worker.json"]
    cfg = WorkerConfig.model_validate(json.loads(text))
    a = cfg.server.adaptive_batching
    assert a is not None and (a.max_batch_size, a.queue_depth) == (64, 7)
    assert a.max_queue_delay_microseconds == 20_000  # the spec's default
    assert cfg.engine_max_batch_size == 64  # the engine is built for the larger batch
    b["spec"]["autoscaling"]["overload"] = {}
    text = children.render(b).config_map["data"]["worker.json"]
    assert WorkerConfig.model_validate(json.loads(text)).server.adaptive_batching is None


def test_gpu_resources_in_requests_and_limits() -> None:
    spec = {
        "model": {"name": "enc", "source": "builtin://mlp"},
        "engine": {"device": "cuda", "pipelineParallel": 2},
        "resources": {"requests": {"cpu": "2"}, "limits": {"memory": "8Gi"}},
    }
    ctr = container(children.render(body(spec)))
    assert ctr["resources"]["requests"] == {"cpu": "2", "nvidia.com/gpu": "2"}
    assert ctr["resources"]["limits"] == {"memory": "8Gi", "nvidia.com/gpu": "2"}


def test_cpu_device_requests_no_gpu() -> None:
    ctr = container(children.render(body()))
    assert "nvidia.com/gpu" not in json.dumps(ctr["resources"])


def test_pod_knobs_pass_through() -> None:
    spec = copy.deepcopy(body()["spec"])
    spec.update(
        nodeSelector={"pool": "gpu"},
        tolerations=[{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}],
        affinity={"nodeAffinity": {"x": 1}},
        priorityClassName="serving",
        serviceAccountName="worker-sa",
        env=[{"name": "A", "value": "1"}, {"name": "POD_NAME", "value": "shadow"}],
        volumes=[{"name": "models", "persistentVolumeClaim": {"claimName": "m"}}],
        volumeMounts=[{"name": "models", "mountPath": "/models"}],
        imagePullPolicy="Never",
        image="registry.local/infleet-worker:dev",
    )
    c = children.render(body(spec))
    pod = c.deployment["spec"]["template"]["spec"]
    ctr = pod["containers"][0]
    assert pod["nodeSelector"] == {"pool": "gpu"}
    assert pod["tolerations"] == [
        {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert pod["affinity"] == {"nodeAffinity": {"x": 1}}
    assert pod["priorityClassName"] == "serving"
    assert pod["serviceAccountName"] == "worker-sa"
    assert pod["volumes"][1]["name"] == "models"
    assert ctr["volumeMounts"][1] == {"name": "models", "mountPath": "/models"}
    assert ctr["imagePullPolicy"] == "Never"
    names = [e["name"] for e in ctr["env"]]
    assert names.count("POD_NAME") == 1 and "A" in names  # ours are never shadowed


def test_redis_secret_ref_becomes_env() -> None:
    spec = copy.deepcopy(body()["spec"])
    spec["cache"] = {"mode": "output", "redis": {"secretRef": {"name": "redis", "key": "url"}}}
    env = {e["name"]: e for e in container(children.render(body(spec)))["env"]}
    assert env[REDIS_URL_ENV]["valueFrom"] == {"secretKeyRef": {"name": "redis", "key": "url"}}


def test_autoscaling_omits_replicas() -> None:
    spec = copy.deepcopy(body()["spec"])
    spec["autoscaling"] = {"enabled": True, "minReplicas": 2, "maxReplicas": 5}
    d = children.render(body(spec)).deployment
    assert "replicas" not in d["spec"]


def test_services_and_pdb() -> None:
    c = children.render(body())
    assert c.service["metadata"]["name"] == "mlp-cpu"
    assert c.service["spec"]["type"] == "ClusterIP"
    assert [p["name"] for p in c.service["spec"]["ports"]] == ["http", "grpc", "metrics"]
    assert c.headless["metadata"]["name"] == "mlp-cpu-headless"
    assert c.headless["spec"]["clusterIP"] == "None"
    assert c.headless["spec"]["publishNotReadyAddresses"] is False
    assert c.pdb["spec"] == {
        "maxUnavailable": 1,
        "selector": {"matchLabels": naming.selector_labels("mlp-cpu")},
    }


def test_render_is_deterministic_and_spec_change_rolls() -> None:
    a = children.render(body())
    b = children.render(body())
    assert a == b
    spec = copy.deepcopy(body()["spec"])
    spec["engine"]["precision"] = "bf16"
    c = children.render(body(spec))
    assert c.config_hash != a.config_hash
    assert c.deployment != a.deployment  # the pod template annotation changes: pods roll


def test_long_names_stay_valid() -> None:
    name = "a" * 80 + ".b"
    c = children.render(body(name=name))
    for label in c.deployment["metadata"]["labels"].values():
        assert len(label) <= 63
    for svc in (c.service, c.headless):
        n = svc["metadata"]["name"]
        assert len(n) <= 63 and "." not in n and n[0].isalpha()
    assert naming.service_name("7up") == "infd-7up"


@pytest.mark.parametrize("grace", [1, 4, 10, 60])
def test_prestop_and_drain_fit_the_grace_period(grace: int) -> None:
    spec = copy.deepcopy(body()["spec"])
    spec["terminationGracePeriodSeconds"] = grace
    parsed = api.InferenceDeploymentSpec.model_validate(spec)
    total = children.prestop_seconds(parsed) + children.server_spec(parsed).drain_seconds
    assert total <= grace


def test_endpoint_names() -> None:
    b = body()
    ep = children.endpoint(b, api.InferenceDeploymentSpec.model_validate(b["spec"]))
    assert ep.http == "http://mlp-cpu.ml.svc:8000"
    assert ep.grpc == "mlp-cpu.ml.svc:8001"
    assert ep.grpc_headless == "dns:///mlp-cpu-headless.ml.svc:8001"


def test_front_ends_pass_through_to_the_worker() -> None:
    b = body()
    assert (
        WorkerConfig.model_validate(
            json.loads(children.render(b).config_map["data"]["worker.json"])
        ).server.front_ends
        == 0
    )  # auto: from the pod's CPUs
    b["spec"]["frontEnds"] = 4
    cfg = json.loads(children.render(b).config_map["data"]["worker.json"])
    assert cfg["server"]["frontEnds"] == 4
