"""kube_harness.nodeagent.node: what the Node objects advertise."""

from __future__ import annotations

from kube_harness.nodeagent.node import NodeShape, node_object, node_status


def test_node_status_advertises_gpus_and_ready() -> None:
    st = node_status(NodeShape("10.9.0.1", gpus=4, cpu="16", memory="64Gi"), "t0")
    assert st["capacity"] == st["allocatable"]
    assert st["capacity"]["nvidia.com/gpu"] == "4" and st["capacity"]["cpu"] == "16"
    conds = {c["type"]: c for c in st["conditions"]}
    assert conds["Ready"]["status"] == "True" and conds["Ready"]["lastTransitionTime"] == "t0"
    assert all(c["status"] == "False" for t, c in conds.items() if t != "Ready")
    assert st["addresses"] == [{"type": "InternalIP", "address": "10.9.0.1"}]
    assert st["nodeInfo"]["kubeletVersion"] == "v1.35.0"


def test_node_object_is_labelled_for_gpu_scheduling() -> None:
    labels = node_object("n0")["metadata"]["labels"]
    assert labels["kubernetes.io/hostname"] == "n0"
    assert labels["nvidia.com/gpu.present"] == "true"
