"""One pod's life on the node: set up, supervise (restarts, init containers, probes),
report status, tear down (preStop, grace period) and finish the deletion.

A :class:`PodWorker` runs in its own thread. It knows its node only through a
frozen :class:`NodeContext` and talks to the API server through its own client;
its :class:`~.supervise.Supervisor` decides what starts and restarts when.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

from kube_harness.nodeagent import containers as procs
from kube_harness.nodeagent import podstatus, probes
from kube_harness.nodeagent.containers import Container
from kube_harness.nodeagent.context import NodeContext
from kube_harness.nodeagent.env import EnvError, container_env, expand
from kube_harness.nodeagent.host import Obj, log, now_iso
from kube_harness.nodeagent.supervise import Supervisor
from kube_harness.nodeagent.volumes import PodVolumes, VolumeError


class PodWorker:
    """One thread per pod: sets up, supervises and tears down its containers."""

    def __init__(
        self, node: NodeContext, api_client: Any, pod: Obj, on_exit: Callable[[str], None]
    ) -> None:
        from kubernetes import client

        self.node = node
        self.core: Any = client.CoreV1Api(api_client)
        self.on_exit = on_exit  # called with the pod's uid when the worker is done
        self.pod = pod
        md = pod["metadata"]
        self.uid: str = md["uid"]
        self.name: str = md["name"]
        self.namespace: str = md["namespace"]
        self.key = f"{self.namespace}/{self.name}"
        self.pod_id = self.uid.replace("-", "")[:8]
        self.dir = node.run_dir / f"{self.namespace}_{self.name}_{self.pod_id}"
        self.host_network = bool(pod["spec"].get("hostNetwork"))
        self.netns: str | None = None
        self.pod_ip: str | None = None
        self.start_time = now_iso()
        self.deleting = threading.Event()
        self.gone = threading.Event()  # object deleted from the API
        self.grace: float = 30.0
        self.wake = threading.Event()
        self.last_status: Obj | None = None
        self.mount_user = f"{os.getpid()}:{self.uid}"
        self.volumes = PodVolumes(node, self.core, self.dir, self.mount_user)
        self.volumes_ready = False
        self.volume_error = ""
        self.next_volume_sync = 0.0
        self.cleaned = False
        logs = self.dir / "logs"
        self.containers = [
            Container(c, True, logs / f"{c['name']}.log")
            for c in pod["spec"].get("initContainers") or []
        ] + [Container(c, False, logs / f"{c['name']}.log") for c in pod["spec"]["containers"]]
        self.supervisor = Supervisor(
            self.containers,
            start=self._start_container,
            check=self._check,
            kill=self._kill_container,
            backoff_base=node.backoff_base,
            backoff_max=node.backoff_max,
            key=self.key,
            pod_ref=f"{self.name}_{self.namespace}({self.uid})",
        )
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.key}", daemon=True)

    # -- events from the watch
    def start(self) -> None:
        self.thread.start()

    def join(self, timeout: float) -> None:
        self.thread.join(timeout)

    def on_update(self, pod: Obj) -> None:
        self.pod = pod
        md = pod["metadata"]
        if md.get("deletionTimestamp") and not self.deleting.is_set():
            self.grace = float(md.get("deletionGracePeriodSeconds") or 0)
            self.deleting.set()
        self.wake.set()

    def on_deleted(self) -> None:
        self.gone.set()
        self.grace = 0
        self.deleting.set()
        self.wake.set()

    def kill_now(self, grace: float) -> None:
        self.grace = min(self.grace, grace)
        self.gone.set()  # agent is going away: do not touch the API any more
        self.deleting.set()
        self.wake.set()

    def pids(self) -> list[int]:
        return [c.proc.pid for c in self.containers if c.proc and c.proc.poll() is None]

    def describe(self) -> str:
        out = [f"{self.key} uid={self.uid} ip={self.pod_ip} netns={self.netns} dir={self.dir}"]
        for c in self.containers:
            pid = c.proc.pid if c.proc else None
            out.append(
                f"  {'init ' if c.init else ''}{c.name}: pid={pid} state={json.dumps(c.state)} "
                f"restarts={c.restart_count} ready={c.ready} log={c.log_file}"
            )
            with contextlib.suppress(OSError):
                tail = c.log_file.read_text(errors="replace").splitlines()[-15:]
                out += ["    | " + line for line in tail]
        return "\n".join(out)

    # -- main loop
    def _run(self) -> None:
        try:
            while not self.deleting.is_set():
                try:
                    if self.pod_ip is None:
                        self._setup_network()
                    self._tick()
                except Exception:  # e.g. a transient API error: retry, as a kubelet would
                    log.exception("pod %s: sync failed, retrying", self.key)
                    self.deleting.wait(1)
                self.wake.wait(0.25)
                self.wake.clear()
            self._shutdown()
        except Exception:
            log.exception("pod %s worker crashed", self.key)
            with contextlib.suppress(Exception):
                procs.terminate(self.containers, 0)
        finally:
            with contextlib.suppress(Exception):
                self._cleanup()
            if not self.gone.is_set():
                self._delete_object()
            self.on_exit(self.uid)

    def _setup_network(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        if self.host_network:
            self.pod_ip = self.node.host_ip
        else:
            self.netns, self.pod_ip = self.node.network.add_pod(self.pod_id)
        log.info("pod %s: ip %s netns %s", self.key, self.pod_ip, self.netns)
        self._push_status()

    def _tick(self) -> None:
        now = time.monotonic()
        if self.supervisor.terminal:
            return
        if not self.volumes_ready or now >= self.next_volume_sync:
            try:
                self.volumes.write(self.pod, self.pod_ip)
                self.volumes_ready = True
                self.volume_error = ""
            except VolumeError as e:
                self.volume_error = str(e)
                if not self.volumes_ready:
                    self.next_volume_sync = now + 2
                    self._push_status()
                    return
            self.next_volume_sync = now + (10 if self.volumes_ready else 2)
        self.supervisor.tick(now, self._policy())
        self._push_status()
        if self.supervisor.terminal:
            self._cleanup()  # like a kubelet tearing down the sandbox of a finished pod

    def _policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy") or "Always")

    # -- containers
    def _start_container(self, c: Container, now: float) -> None:
        spec = c.spec
        image = spec.get("image", "")
        mapped = procs.map_image(image)
        if mapped is None:
            if not c.image_error_since:
                c.image_error_since = now
            c.state = procs.image_error(image, c.image_error_since, now)
            return
        try:
            env = container_env(self.node, self.core, self.pod, spec, self.pod_ip)
        except EnvError as e:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            c.next_start = now + 2
            return
        argv = [expand(a, env) for a in procs.command_line(spec, mapped)]
        if not argv:
            c.state = {"waiting": {"reason": "CreateContainerError", "message": "no command"}}
            return
        argv[0] = procs.resolve_exe(argv[0], self.node.venv)
        script = self.volumes.mount_script(self.pod, c, self._hostname())
        if not procs.launch(c, argv, env, self.netns, script, now):
            return
        probes.arm(c, now)
        assert c.proc is not None
        log.info("pod %s container %s started pid %s: %s", self.key, c.name, c.proc.pid, argv)

    def _hostname(self) -> str:
        return str(self.pod["spec"].get("hostname") or self.name)[:63]

    def _check(self, c: Container, spec: Obj) -> bool:
        return probes.check(c, spec, self.pod_ip, self.node.venv)

    def _kill_container(self, c: Container, reason: str) -> None:
        log.info("pod %s container %s: %s, killing", self.key, c.name, reason)
        c.killing_reason = reason
        grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        procs.terminate([c], grace)

    # -- status
    def _status(self) -> Obj:
        if self.volume_error and not self.volumes_ready:
            for c in self.containers:
                c.state = {"waiting": {"reason": "ContainerCreating", "message": self.volume_error}}
        sup = self.supervisor
        return podstatus.pod_status(
            self.pod,
            self.containers,
            phase=podstatus.phase(self.containers, sup.init_done, sup.terminal),
            init_done=sup.init_done,
            pod_ip=self.pod_ip,
            host_ip=self.node.host_ip,
            start_time=self.start_time,
        )

    def _push_status(self, force: bool = False) -> None:
        if self.gone.is_set():
            return
        from kubernetes import client

        st = self._status()
        cmp = json.dumps(st, sort_keys=True)
        if (
            not force
            and self.last_status is not None
            and json.dumps(self.last_status, sort_keys=True) == cmp
        ):
            return
        try:
            self.core.patch_namespaced_pod_status(
                self.name, self.namespace, {"status": st}, _preload_content=False
            )
            self.last_status = st
        except client.ApiException as e:
            if e.status == 404:
                self.on_deleted()
            else:
                log.warning("status update for %s failed: %s", self.key, e.reason)
        except Exception as e:
            log.warning("status update for %s failed: %s", self.key, e)

    # -- shutdown
    def _shutdown(self) -> None:
        grace = self.grace
        t0 = time.monotonic()
        if not self.gone.is_set():
            for c in self.containers:
                if c.running() and not c.init:
                    probes.pre_stop(c, grace, self.pod_ip, self.node.venv, self.key)
        remaining = max(0.0, grace - (time.monotonic() - t0))
        procs.terminate(self.containers, remaining)
        now = time.monotonic()
        for c in self.containers:
            if c.proc is not None:
                self.supervisor.reap(c, now)
            c.ready = False
        log.info("pod %s stopped", self.key)

    def _cleanup(self) -> None:
        if self.cleaned:
            return
        self.cleaned = True
        if self.netns:
            self.node.network.remove_pod(self.pod_id, self.pod_ip)
        self.node.mounts.release(self.mount_user)

    def _delete_object(self) -> None:
        from kubernetes import client

        self._push_status(force=True)
        try:
            self.core.delete_namespaced_pod(
                self.name,
                self.namespace,
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
            )
        except client.ApiException as e:
            if e.status not in (404, 409):
                log.warning("final delete of %s failed: %s", self.key, e.reason)
