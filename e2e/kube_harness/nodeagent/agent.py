"""The node agent: owns the nodes, watches their pods, one :class:`PodWorker` per pod."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kube_harness.net import Network
from kube_harness.nodeagent.context import NodeContext
from kube_harness.nodeagent.host import Obj, log, venv_dir
from kube_harness.nodeagent.mounts import MountPoints
from kube_harness.nodeagent.node import NodeHeartbeat, NodeShape
from kube_harness.nodeagent.pod import PodWorker


class NodeAgent:
    def __init__(
        self,
        api_client_factory: Callable[[], Any],
        network: Network,
        run_dir: Path,
        api_host: str,
        api_port: int,
        nodes: list[str],
        gpus_per_node: int = 2,
        cpu: str = "8",
        memory: str = "32Gi",
        kubelet_version: str = "v1.35.0",
        backoff_base: float = 10.0,
        backoff_max: float = 300.0,
    ) -> None:
        self.api_client_factory = api_client_factory
        self.nodes = nodes
        self.stopping = threading.Event()
        self.pods: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        mounts = MountPoints()
        mounts.sweep()
        self.context = NodeContext(
            run_dir=run_dir,
            host_ip=api_host,
            api_port=api_port,
            cpu=cpu,
            memory=memory,
            venv=venv_dir(),
            backoff_base=backoff_base,
            backoff_max=backoff_max,
            network=network,
            mounts=mounts,
        )
        shape = NodeShape(api_host, gpus_per_node, cpu, memory, kubelet_version)
        self.heartbeat = NodeHeartbeat(api_client_factory, nodes, shape, self.stopping)
        self.threads: list[threading.Thread] = []
        run_dir.mkdir(parents=True, exist_ok=True)
        self._log_handler = logging.FileHandler(run_dir.parent / "logs" / "nodeagent.log")
        self._log_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(message)s")
        )
        log.addHandler(self._log_handler)
        log.setLevel(logging.INFO)

    # -- lifecycle
    def start(self) -> None:
        self.heartbeat.register_all()
        for target, name in ((self.heartbeat.loop, "heartbeat"), (self._watch_loop, "pod-watch")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self.threads.append(t)
        log.info("node agent started: %s", ", ".join(self.nodes))

    def stop(self) -> None:
        self.stopping.set()
        workers = self._workers()
        for w in workers:
            w.kill_now(grace=2.0)
        for w in workers:
            w.join(10)
        for t in self.threads:
            t.join(1)  # the watch thread may sit in a long poll: it is a daemon and checks stopping
        log.info("node agent stopped")
        log.removeHandler(self._log_handler)
        self._log_handler.close()

    def _workers(self) -> list[PodWorker]:
        with self.lock:
            return list(self.pods.values())

    def describe(self) -> str:
        return "\n".join(["===== node agent pods =====", *(w.describe() for w in self._workers())])

    def processes(self) -> dict[str, list[int]]:
        """``namespace/name`` -> pids of running container processes."""
        return {w.key: pids for w in self._workers() if (pids := w.pids())}

    # -- pods
    def _watch_loop(self) -> None:
        from kubernetes import client, watch

        nodes = set(self.nodes)
        rv: str | None = None
        while not self.stopping.is_set():
            try:
                core: Any = client.CoreV1Api(self.api_client_factory())
                if rv is None:
                    rv = self._relist(core, nodes)
                w_ = watch.Watch()
                for ev in w_.stream(
                    core.list_pod_for_all_namespaces,
                    resource_version=rv,
                    timeout_seconds=60,
                    allow_watch_bookmarks=True,
                ):
                    if self.stopping.is_set():
                        w_.stop()
                        break
                    typ, obj = ev["type"], ev["raw_object"]
                    if typ == "ERROR":
                        rv = None  # e.g. 410 Gone: relist
                        break
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    if typ != "BOOKMARK" and obj.get("spec", {}).get("nodeName") in nodes:
                        self._on_pod(typ, obj)
            except Exception as e:
                if self.stopping.is_set():
                    return
                rv = None
                if not (isinstance(e, client.ApiException) and e.status == 410):
                    log.exception("pod watch failed; relisting")
                self.stopping.wait(1)

    def _relist(self, core: Any, nodes: set[str]) -> str:
        listing = json.loads(core.list_pod_for_all_namespaces(_preload_content=False).data)
        seen = set()
        for pod in listing["items"]:
            if pod["spec"].get("nodeName") in nodes:
                seen.add(pod["metadata"]["uid"])
                self._on_pod("ADDED", pod)
        with self.lock:
            gone = [w for uid, w in self.pods.items() if uid not in seen]
        for w in gone:
            w.on_deleted()
        return str(listing["metadata"]["resourceVersion"])

    def _on_pod(self, typ: str, pod: Obj) -> None:
        uid = pod["metadata"]["uid"]
        with self.lock:
            w = self.pods.get(uid)
            if typ == "DELETED":
                if w is not None:
                    w.on_deleted()
                return
            if w is None:
                if self.stopping.is_set():
                    return
                phase = pod.get("status", {}).get("phase")
                if pod["metadata"].get("deletionTimestamp"):
                    # nothing of it runs here: finish the deletion
                    threading.Thread(target=self._force_delete, args=(pod,), daemon=True).start()
                    return
                if phase in ("Succeeded", "Failed"):
                    return
                w = PodWorker(self.context, self.api_client_factory(), pod, self.forget)
                self.pods[uid] = w
                w.start()
                return
        w.on_update(pod)

    def _force_delete(self, pod: Obj) -> None:
        from kubernetes import client

        md = pod["metadata"]
        core: Any = client.CoreV1Api(self.api_client_factory())
        try:
            core.delete_namespaced_pod(
                md["name"],
                md["namespace"],
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": md["uid"]}},
            )
        except client.ApiException as e:
            if e.status not in (404, 409):
                log.warning("delete %s/%s: %s", md["namespace"], md["name"], e)

    def forget(self, uid: str) -> None:
        with self.lock:
            self.pods.pop(uid, None)
