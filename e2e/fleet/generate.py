"""A tiny generative fleet for e2e tests, and what they read of it: the llama
example cut to a CPU shape that streams at ~15-45 ms a token here, its status,
its pods and its Ready addresses. Shared by test_generate_load.py (scaled by
hand, rolled) and test_generate_autoscale.py (scaled by the autoscaler)."""

from __future__ import annotations

import time
from typing import Any

import yaml
from kubernetes import client

from fleet.operator import GROUP, PLURAL, ROOT, VERSION
from fleet.streams import StreamLoad
from kube_harness.testing import wait_for

LABEL = "infleet.dev/deployment"
KV_BLOCKS = 256  # explicit: 12 layers x 1,024 tokens would otherwise size ~1 GiB a pod


def get(api: Any, ns: str, name: str) -> dict[str, Any]:
    custom: Any = client.CustomObjectsApi(api)
    obj: dict[str, Any] = custom.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    return obj


def settled(api: Any, ns: str, name: str, replicas: int) -> Any:
    """The status says Ready with ``replicas`` pods of the current spec (or None)."""
    obj = get(api, ns, name)
    st = obj.get("status") or {}
    conds = {c["type"]: c["status"] for c in st.get("conditions") or []}
    ok = (
        conds.get("Ready") == "True"
        and conds.get("Progressing") == "False"
        and st.get("observedGeneration") == obj["metadata"]["generation"]
        and st.get("readyReplicas") == st.get("replicas") == replicas
    )
    return obj if ok else None


def pods(api: Any, ns: str, name: str) -> list[Any]:
    return list(
        client.CoreV1Api(api).list_namespaced_pod(ns, label_selector=f"{LABEL}={name}").items
    )


def create_fleet(api: Any, ns: str, autoscaling: dict[str, Any] | None = None) -> str:
    """The llama example as 12 layers x 768 on CPU, plain decoding, waited for until
    Ready with one pod; ``autoscaling``: its spec.autoscaling (the autoscaler then
    owns the replicas)."""
    doc = yaml.safe_load((ROOT / "manifests/examples/llama-generate.yaml").read_text())
    spec = doc["spec"]
    spec["resources"] = {"requests": {"cpu": "100m", "memory": "256Mi"}}
    spec["model"]["parameters"] = {"layers": "12", "hidden": "768"}  # ~15 ms a token on CPU
    del spec["engine"]["speculative"]  # plain decoding: a draft would shorten the long stream
    spec["engine"]["kvCache"]["blocks"] = KV_BLOCKS
    spec["engine"]["generation"]["maxTokens"] = 1000  # grace: 3 + 5 + 50 + 5 = 63 s
    if autoscaling is not None:
        spec["autoscaling"] = autoscaling
    name = doc["metadata"]["name"]
    client.CustomObjectsApi(api).create_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, doc)
    wait_for(lambda: settled(api, ns, name, 1), timeout=90, interval=0.3, what=f"{name} Ready")
    return name


def patch_spec(api: Any, ns: str, name: str, spec: dict[str, Any]) -> None:
    client.CustomObjectsApi(api).patch_namespaced_custom_object(
        GROUP, VERSION, ns, PLURAL, name, {"spec": spec}
    )


def terminating(api: Any, ns: str, name: str) -> tuple[str, str, float] | None:
    """(pod, IP, when seen) of the fleet's first pod that is going away."""
    for p in pods(api, ns, name):
        if p.metadata.deletion_timestamp and p.status.pod_ip:
            return p.metadata.name, p.status.pod_ip, time.monotonic()
    return None


def gone(api: Any, ns: str, name: str, pod: str) -> bool:
    return all(p.metadata.name != pod for p in pods(api, ns, name))


def only_address(load: StreamLoad) -> str:
    """The one Ready address (the EndpointSlice follows pod readiness a moment later)."""
    addrs = wait_for(
        lambda: found if len(found := load.watcher.addresses) == 1 else None,
        timeout=20,
        interval=0.1,
        what="exactly one Ready address",
    )
    return str(addrs[0])


def pod_at(api: Any, ns: str, name: str, ip: str) -> str:
    return str(next(p.metadata.name for p in pods(api, ns, name) if p.status.pod_ip == ip))
