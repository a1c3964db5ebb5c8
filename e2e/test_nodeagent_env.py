"""kube_harness.nodeagent.env: a container's environment as a kubelet builds it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

from kube_harness.nodeagent.context import NodeContext
from kube_harness.nodeagent.env import container_env, expand, field_ref, resource_ref

NODE = NodeContext(
    run_dir=Path("/nonexistent"),
    host_ip="10.9.0.1",
    api_port=6443,
    cpu="8",
    memory="32Gi",
    venv=Path("/venv"),
    backoff_base=10,
    backoff_max=300,
    network=cast(Any, None),
    mounts=cast(Any, None),
)

POD: dict[str, Any] = {
    "metadata": {
        "name": "web-1",
        "namespace": "ns",
        "uid": "u-1",
        "labels": {"app": "web", "tier": "front"},
    },
    "spec": {
        "nodeName": "infleet-node-0",
        "containers": [
            {"name": "main", "resources": {"limits": {"cpu": "1500m", "memory": "1Gi"}}},
            {"name": "side"},
        ],
    },
}


def test_expand_like_kubernetes() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"


def test_field_refs() -> None:
    def ref(path: str) -> str:
        return field_ref(POD, path, "10.9.0.7", NODE.host_ip)

    assert ref("metadata.name") == "web-1" and ref("metadata.uid") == "u-1"
    assert ref("spec.nodeName") == "infleet-node-0"
    assert ref("status.podIP") == "10.9.0.7" and ref("status.hostIP") == "10.9.0.1"
    assert ref("metadata.labels['tier']") == "front"
    assert ref("metadata.labels") == 'app="web"\ntier="front"'
    assert ref("spec.unknown") == ""
    assert field_ref(POD, "status.podIP", None, NODE.host_ip) == ""


def test_resource_refs_round_up_and_default_to_the_node() -> None:
    main = POD["spec"]["containers"][0]
    assert resource_ref(POD, {"resource": "limits.cpu"}, main, NODE) == "2"
    assert resource_ref(POD, {"resource": "limits.cpu", "divisor": "1m"}, main, NODE) == "1500"
    assert resource_ref(POD, {"resource": "limits.memory"}, main, NODE) == str(1024**3)
    side = POD["spec"]["containers"][1]
    assert resource_ref(POD, {"resource": "limits.cpu"}, side, NODE) == "8"  # node capacity
    by_name = {"resource": "limits.cpu", "containerName": "main"}
    assert resource_ref(POD, by_name, None, NODE) == "2"


def test_literal_env_and_service_host() -> None:
    spec = {
        "name": "main",
        "env": [
            {"name": "A", "value": "1"},
            {"name": "B", "value": "$(A)-$(KUBERNETES_SERVICE_HOST)"},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        ],
    }
    env = container_env(NODE, None, POD, spec, "10.9.0.7")  # no refs: no API reads
    assert env["B"] == "1-10.9.0.1"
    assert env["POD"] == "web-1" and env["HOSTNAME"] == "web-1"
    assert env["KUBERNETES_SERVICE_PORT"] == "6443"
    assert env["PATH"].startswith("/venv/bin:")
