"""The Node objects and their Leases: register, keep Ready, renew every 10 s."""

from __future__ import annotations

import datetime as dt
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kube_harness.nodeagent.host import Obj, log, now_iso

LEASE_NAMESPACE = "kube-node-lease"


@dataclass(frozen=True)
class NodeShape:
    """What every node of the agent advertises."""

    address: str  # InternalIP: the API server's gateway on the cluster bridge
    gpus: int = 2
    cpu: str = "8"
    memory: str = "32Gi"
    kubelet_version: str = "v1.35.0"


def node_status(shape: NodeShape, started_at: str) -> Obj:
    """The Node's ``status``: capacity, Ready and no-pressure conditions, node info."""
    res = {
        "cpu": shape.cpu,
        "memory": shape.memory,
        "pods": "110",
        "ephemeral-storage": "100Gi",
        "nvidia.com/gpu": str(shape.gpus),
    }
    t = now_iso()

    def cond(type_: str, status: str, reason: str, msg: str) -> Obj:
        return {
            "type": type_,
            "status": status,
            "reason": reason,
            "message": msg,
            "lastHeartbeatTime": t,
            "lastTransitionTime": started_at,
        }

    return {
        "capacity": res,
        "allocatable": res,
        "conditions": [
            cond("MemoryPressure", "False", "KubeletHasSufficientMemory", "ok"),
            cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "ok"),
            cond("PIDPressure", "False", "KubeletHasSufficientPID", "ok"),
            cond("Ready", "True", "KubeletReady", "infleet node agent is posting ready status"),
        ],
        "addresses": [{"type": "InternalIP", "address": shape.address}],
        "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
        "nodeInfo": {
            "machineID": "infleet",
            "systemUUID": "infleet",
            "bootID": "infleet",
            "kernelVersion": os.uname().release,
            "osImage": "infleet node agent",
            "containerRuntimeVersion": "infleet://local-process",
            "kubeletVersion": shape.kubelet_version,
            "kubeProxyVersion": "",
            "operatingSystem": "linux",
            "architecture": "amd64",
        },
    }


def node_object(name: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": name,
            "labels": {
                "kubernetes.io/hostname": name,
                "kubernetes.io/os": "linux",
                "kubernetes.io/arch": "amd64",
                "nvidia.com/gpu.present": "true",
                "infleet.dev/node-agent": "true",
            },
        },
    }


class NodeHeartbeat:
    """Registers the nodes, then renews their Leases (10 s) and status (30 s) until stopped."""

    started_at = now_iso()

    def __init__(
        self,
        api_client_factory: Callable[[], Any],
        names: list[str],
        shape: NodeShape,
        stopping: threading.Event,
    ) -> None:
        self.api_client_factory = api_client_factory
        self.names = names
        self.shape = shape
        self.stopping = stopping

    def _core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client_factory())

    def register_all(self) -> None:
        core = self._core()
        for n in self.names:
            self.register(core, n)

    def register(self, core: Any, name: str) -> None:
        from kubernetes import client

        try:
            core.create_node(node_object(name))
        except client.ApiException as e:
            if e.status != 409:
                raise
        core.patch_node_status(name, {"status": node_status(self.shape, self.started_at)})
        self.renew_lease(name)

    def renew_lease(self, name: str) -> None:
        from kubernetes import client

        coord: Any = client.CoordinationV1Api(self.api_client_factory())
        renew = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": LEASE_NAMESPACE},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew},
        }
        try:
            coord.patch_namespaced_lease(name, LEASE_NAMESPACE, {"spec": body["spec"]})
        except client.ApiException as e:
            if e.status != 404:
                raise
            coord.create_namespaced_lease(LEASE_NAMESPACE, body)

    def loop(self) -> None:
        from kubernetes import client

        n = 0
        while not self.stopping.wait(10):
            n += 1
            for name in self.names:
                try:
                    self.renew_lease(name)
                    if n % 3 == 0:
                        core = self._core()
                        try:
                            core.patch_node_status(
                                name, {"status": node_status(self.shape, self.started_at)}
                            )
                        except client.ApiException as e:
                            if e.status == 404:
                                self.register(core, name)
                            else:
                                raise
                except Exception:
                    if not self.stopping.is_set():
                        log.exception("heartbeat for %s failed", name)
