"""A kubelet stand-in: registers nodes and runs their pods as local processes.

What it does, per node it owns:

- registers the Node with cpu/memory/pods/``nvidia.com/gpu`` capacity, keeps it
  Ready (conditions + a Lease in ``kube-node-lease`` renewed every 10 s);
- watches pods bound to it and runs each container's command as a local
  process: own network namespace (veth on the cluster bridge, IP from the pod
  CIDR), own mount+UTS namespace (``unshare``) where ConfigMap, Secret,
  emptyDir, downwardAPI, hostPath and projected (ServiceAccount token) volumes
  are bind-mounted at their ``mountPath``;
- env: literal, ``$(VAR)`` expansion, fieldRef/resourceFieldRef, ConfigMap and
  Secret refs, envFrom; ``KUBERNETES_SERVICE_HOST``/``PORT`` point at the API
  server's gateway address (a real kubelet points at the ``kubernetes``
  Service's ClusterIP, which nothing routes here);
- httpGet/tcpSocket/exec startup/readiness/liveness probes, restartPolicy with
  back-off (CrashLoopBackOff), init containers, preStop exec/sleep/httpGet,
  graceful deletion (SIGTERM to the process group, SIGKILL after the grace
  period, then the pod object is deleted with grace 0);
- pulls no images: see :func:`map_image` (and e2e/README.md).
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import http.client
import json
import logging
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kube_harness.net import Network

log = logging.getLogger("kube_harness.nodeagent")

Obj = dict[str, Any]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def venv_dir() -> Path:
    env = os.environ.get("INFLEET_VENV")
    if env and (Path(env) / "bin" / "python").exists():
        return Path(env)
    return Path(sys.prefix)


# ---------------------------------------------------------------------------- images
@dataclass(frozen=True)
class ImageMap:
    entrypoint: list[str]
    cmd: list[str]


def map_image(image: str) -> ImageMap | None:
    """Map an image reference to a local installation, or None (-> ErrImagePull).

    - ``*/infleet-worker``, ``*/infleet/worker`` -> entrypoint ``infleet-worker`` (venv bin)
    - ``*/infleet-operator``, ``*/infleet/operator`` -> entrypoint ``infleet-operator``
    - ``python``, ``python:<tag>``, ``*/python:<tag>`` -> CMD ``python3`` (the venv's python)
    """
    ref = image.split("@", 1)[0]
    last = ref.rsplit("/", 1)[-1]
    repo = ref[: len(ref) - len(last)] + last.split(":", 1)[0]
    if repo.endswith(("infleet-worker", "infleet/worker")):
        return ImageMap(["infleet-worker"], [])
    if repo.endswith(("infleet-operator", "infleet/operator")):
        return ImageMap(["infleet-operator"], [])
    if repo.rsplit("/", 1)[-1] == "python":
        return ImageMap([], ["python3"])
    return None


def resolve_exe(name: str, venv: Path) -> str:
    base = os.path.basename(name)
    if re.fullmatch(r"python(3(\.\d+)?)?", base):
        return str(venv / "bin" / "python")
    if "/" in name:
        return name
    cand = venv / "bin" / name
    if cand.exists():
        return str(cand)
    return shutil.which(name, path=DEFAULT_PATH) or name


_VAR_RE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion (``$$`` escapes, unknown refs stay as-is)."""

    def rep(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_RE.sub(rep, s)


# ---------------------------------------------------------------------------- agent
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
        self.network = network
        self.run_dir = run_dir
        self.api_host = api_host
        self.api_port = api_port
        self.nodes = nodes
        self.gpus_per_node = gpus_per_node
        self.cpu = cpu
        self.memory = memory
        self.kubelet_version = kubelet_version
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.venv = venv_dir()
        self.stopping = threading.Event()
        self.pods: dict[str, PodWorker] = {}
        self.lock = threading.Lock()
        self.mounts = MountPoints()
        self.mounts.sweep()
        self.threads: list[threading.Thread] = []
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._log_handler = logging.FileHandler(self.run_dir.parent / "logs" / "nodeagent.log")
        self._log_handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(threadName)s %(message)s")
        )
        log.addHandler(self._log_handler)
        log.setLevel(logging.INFO)

    # -- api helpers
    def core(self) -> Any:
        from kubernetes import client

        return client.CoreV1Api(self.api_client_factory())

    # -- lifecycle
    def start(self) -> None:
        core = self.core()
        for n in self.nodes:
            self._register(core, n)
        for target, name in ((self._heartbeat_loop, "heartbeat"), (self._watch_loop, "pod-watch")):
            t = threading.Thread(target=target, name=name, daemon=True)
            t.start()
            self.threads.append(t)
        # wait until the nodes are visible as Ready (they are, from the first status patch)
        log.info("node agent started: %s", ", ".join(self.nodes))

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            workers = list(self.pods.values())
        for w in workers:
            w.kill_now(grace=2.0)
        for w in workers:
            w.join(10)
        for t in self.threads:
            t.join(1)  # the watch thread may sit in a long poll: it is a daemon and checks stopping
        log.info("node agent stopped")
        log.removeHandler(self._log_handler)
        self._log_handler.close()

    def describe(self) -> str:
        lines = ["===== node agent pods ====="]
        with self.lock:
            workers = list(self.pods.values())
        for w in workers:
            lines.append(w.describe())
        return "\n".join(lines)

    def processes(self) -> dict[str, list[int]]:
        """``namespace/name`` -> pids of running container processes."""
        out: dict[str, list[int]] = {}
        with self.lock:
            workers = list(self.pods.values())
        for w in workers:
            pids = [c.proc.pid for c in w.containers if c.proc and c.proc.poll() is None]
            if pids:
                out[w.key] = pids
        return out

    # -- nodes
    def _node_status(self) -> Obj:
        res = {
            "cpu": self.cpu,
            "memory": self.memory,
            "pods": "110",
            "ephemeral-storage": "100Gi",
            "nvidia.com/gpu": str(self.gpus_per_node),
        }
        t = now_iso()

        def cond(type_: str, status: str, reason: str, msg: str) -> Obj:
            return {
                "type": type_,
                "status": status,
                "reason": reason,
                "message": msg,
                "lastHeartbeatTime": t,
                "lastTransitionTime": self._started_at,
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
            "addresses": [{"type": "InternalIP", "address": self.api_host}],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 10250}},
            "nodeInfo": {
                "machineID": "infleet",
                "systemUUID": "infleet",
                "bootID": "infleet",
                "kernelVersion": os.uname().release,
                "osImage": "infleet node agent",
                "containerRuntimeVersion": "infleet://local-process",
                "kubeletVersion": self.kubelet_version,
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": "amd64",
            },
        }

    _started_at = now_iso()

    def _register(self, core: Any, name: str) -> None:
        from kubernetes import client

        body = {
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
        try:
            core.create_node(body)
        except client.ApiException as e:
            if e.status != 409:
                raise
        core.patch_node_status(name, {"status": self._node_status()})
        self._renew_lease(name)

    def _renew_lease(self, name: str) -> None:
        from kubernetes import client

        coord: Any = client.CoordinationV1Api(self.api_client_factory())
        renew = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": name, "namespace": "kube-node-lease"},
            "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": renew},
        }
        try:
            coord.patch_namespaced_lease(name, "kube-node-lease", {"spec": body["spec"]})
        except client.ApiException as e:
            if e.status != 404:
                raise
            coord.create_namespaced_lease("kube-node-lease", body)

    def _heartbeat_loop(self) -> None:
        from kubernetes import client

        n = 0
        while not self.stopping.wait(10):
            n += 1
            for name in self.nodes:
                try:
                    self._renew_lease(name)
                    if n % 3 == 0:
                        core = self.core()
                        try:
                            core.patch_node_status(name, {"status": self._node_status()})
                        except client.ApiException as e:
                            if e.status == 404:
                                self._register(core, name)
                            else:
                                raise
                except Exception:
                    if not self.stopping.is_set():
                        log.exception("heartbeat for %s failed", name)

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
                w = PodWorker(self, pod)
                self.pods[uid] = w
                w.start()
                return
        w.on_update(pod)

    def _force_delete(self, pod: Obj) -> None:
        from kubernetes import client

        md = pod["metadata"]
        try:
            self.core().delete_namespaced_pod(
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


# ---------------------------------------------------------------------------- mounts
class MountPoints:
    """Creates missing mountPath directories on the host and removes them when unused.

    Several clusters (other test sessions, ``make cluster-up``) may run on one
    machine, each with its own agent, and removing a directory that another
    pod's mount namespace uses as a mountpoint detaches that mount. So the
    bookkeeping is machine-wide: a JSON registry under /run guarded by flock,
    with users ``<agent pid>:<pod uid>``; users whose agent died are pruned.
    """

    STATE = Path("/run/infleet-mountpoints")

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state = state_dir or self.STATE
        self.state.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _registry(self) -> Any:
        import fcntl

        with (self.state / ".lock").open("a+") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            path = self.state / "registry.json"
            try:
                reg: dict[str, list[str]] = json.loads(path.read_text())
            except (OSError, ValueError):
                reg = {}
            for k, users in list(reg.items()):
                reg[k] = [u for u in users if _pid_alive(int(u.split(":", 1)[0]))]
            yield reg
            self._remove_unused(reg)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(reg))
            os.replace(tmp, path)

    @staticmethod
    def _remove_unused(reg: dict[str, list[str]]) -> None:
        for k in sorted(reg, key=len, reverse=True):
            if reg[k]:
                continue
            p = Path(k)
            with contextlib.suppress(OSError):
                if p.is_file() and not p.is_symlink():
                    if p.stat().st_size == 0:
                        p.unlink()
                else:
                    p.rmdir()
            if not p.exists() or (p.is_dir() and any(p.iterdir())):
                del reg[k]  # gone, or someone put things there: not ours any more

    def acquire(self, target: Path, is_file: bool, user: str) -> None:
        with self._registry() as reg:
            p = target.parent if is_file else target
            missing: list[Path] = []
            while not p.exists():
                missing.append(p)
                p = p.parent
            for m in reversed(missing):
                m.mkdir(exist_ok=True)
                reg.setdefault(str(m), [])
            if is_file and not target.exists():
                target.touch()
                reg.setdefault(str(target), [])
            for c in (target, *target.parents):
                if str(c) in reg and user not in reg[str(c)]:
                    reg[str(c)].append(user)

    def release(self, user: str) -> None:
        with self._registry() as reg:
            for users in reg.values():
                if user in users:
                    users.remove(user)

    def sweep(self) -> None:
        """Drop dead agents' users and remove what nobody uses."""
        with self._registry():
            pass


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# ---------------------------------------------------------------------------- pods
@dataclass
class Probe:
    spec: Obj
    kind: str  # startup | readiness | liveness
    next_at: float = 0.0
    successes: int = 0
    failures: int = 0


@dataclass
class Container:
    spec: Obj
    init: bool
    log_file: Path
    proc: subprocess.Popen[bytes] | None = None
    state: Obj = field(default_factory=lambda: {"waiting": {"reason": "ContainerCreating"}})
    last_state: Obj = field(default_factory=dict)
    restart_count: int = 0
    ready: bool = False
    started: bool = False
    next_start: float = 0.0
    backoff: float = 0.0
    started_mono: float = 0.0
    image_error_since: float = 0.0
    probes: dict[str, Probe] = field(default_factory=dict)
    killing_reason: str = ""

    @property
    def name(self) -> str:
        return str(self.spec["name"])

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self, image: str) -> Obj:
        st: Obj = {
            "name": self.name,
            "image": image,
            "imageID": "",
            "ready": self.ready,
            "restartCount": self.restart_count,
            "started": self.started if "running" in self.state else False,
            "state": self.state,
        }
        if self.proc is not None:
            st["containerID"] = f"infleet://{self.proc.pid}"
        if self.last_state:
            st["lastState"] = self.last_state
        return st


class PodWorker:
    """One thread per pod: sets up, supervises and tears down its containers."""

    def __init__(self, agent: NodeAgent, pod: Obj) -> None:
        self.agent = agent
        self.pod = pod
        md = pod["metadata"]
        self.uid: str = md["uid"]
        self.name: str = md["name"]
        self.namespace: str = md["namespace"]
        self.key = f"{self.namespace}/{self.name}"
        self.pod_id = self.uid.replace("-", "")[:8]
        self.dir = agent.run_dir / f"{self.namespace}_{self.name}_{self.pod_id}"
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
        self.volumes_ready = False
        self.volume_error = ""
        self.next_volume_sync = 0.0
        self.token_refresh_at: dict[str, float] = {}
        self.terminal = False
        self.cleaned = False
        self.init_done = not pod["spec"].get("initContainers")
        logs = self.dir / "logs"
        self.containers = [
            Container(c, True, logs / f"{c['name']}.log")
            for c in pod["spec"].get("initContainers") or []
        ] + [Container(c, False, logs / f"{c['name']}.log") for c in pod["spec"]["containers"]]
        self.thread = threading.Thread(target=self._run, name=f"pod-{self.key}", daemon=True)
        self.api_client: Any = None

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

    # -- api
    def core(self) -> Any:
        from kubernetes import client

        if self.api_client is None:
            self.api_client = self.agent.api_client_factory()
        return client.CoreV1Api(self.api_client)

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
                self._kill_all(0)
        finally:
            with contextlib.suppress(Exception):
                self._cleanup()
            if not self.gone.is_set():
                self._delete_object()
            self.agent.forget(self.uid)

    def _setup_network(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        if self.host_network:
            self.pod_ip = self.agent.api_host
        else:
            self.netns, self.pod_ip = self.agent.network.add_pod(self.pod_id)
        log.info("pod %s: ip %s netns %s", self.key, self.pod_ip, self.netns)
        self._push_status()

    def _tick(self) -> None:
        now = time.monotonic()
        if self.terminal:
            return
        if not self.volumes_ready or now >= self.next_volume_sync:
            try:
                self._write_volumes()
                self.volumes_ready = True
                self.volume_error = ""
            except VolumeError as e:
                self.volume_error = str(e)
                if not self.volumes_ready:
                    self.next_volume_sync = now + 2
                    self._push_status()
                    return
            self.next_volume_sync = now + (10 if self.volumes_ready else 2)
        if not self.init_done:
            self._tick_init(now)
        if self.init_done:
            for c in self.containers:
                if not c.init:
                    self._tick_container(c, now)
            self._check_terminal()
        self._push_status()
        if self.terminal:
            self._cleanup()  # like a kubelet tearing down the sandbox of a finished pod

    def _policy(self) -> str:
        return str(self.pod["spec"].get("restartPolicy") or "Always")

    def _tick_init(self, now: float) -> None:
        for c in self.containers:
            if not c.init:
                continue
            if c.running():
                return
            if c.proc is not None:
                self._reap(c, now)
            term = c.state.get("terminated")
            if term and term["exitCode"] == 0:
                continue
            if term and self._policy() == "Never":
                self.terminal = True
                return
            self._start_when_due(c, now)
            return
        self.init_done = True

    def _tick_container(self, c: Container, now: float) -> None:
        if c.running():
            self._run_probes(c, now)
            return
        if c.proc is not None:
            self._reap(c, now)
        term = c.state.get("terminated")
        if term:
            policy = self._policy()
            if policy == "Never" or (policy == "OnFailure" and term["exitCode"] == 0):
                return
        self._start_when_due(c, now)

    def _start_when_due(self, c: Container, now: float) -> None:
        if now >= c.next_start:
            self._start_container(c, now)
            return
        crashed = "terminated" in c.state or c.state.get("waiting", {}).get("reason") == (
            "CrashLoopBackOff"
        )
        if crashed:
            c.state = {
                "waiting": {
                    "reason": "CrashLoopBackOff",
                    "message": f"back-off {c.backoff / 2 if c.backoff else 0:.0f}s restarting "
                    f"failed container={c.name} pod={self.name}_{self.namespace}({self.uid})",
                }
            }

    def _reap(self, c: Container, now: float) -> None:
        assert c.proc is not None
        code = c.proc.returncode
        if code is None:
            return
        if code < 0:  # killed by a signal: report as a shell would
            code = 128 - code
        term = {
            "exitCode": code,
            "reason": "Completed" if code == 0 else ("Error" if code != 137 else "OOMKilled"),
            "startedAt": c.state.get("running", {}).get("startedAt", now_iso()),
            "finishedAt": now_iso(),
            "containerID": f"infleet://{c.proc.pid}",
        }
        if code == 137:
            term["reason"] = "Error"
        if c.killing_reason:
            term["message"] = c.killing_reason
        c.state = {"terminated": term}
        c.last_state = {"terminated": term}
        c.ready = False
        c.started = False
        c.proc = None
        c.killing_reason = ""
        log.info("pod %s container %s exited %s", self.key, c.name, code)
        # back-off: immediate first restart, then base, 2*base, ... (reset after 10 min up)
        ran = now - c.started_mono
        if ran > 600:
            c.backoff = 0.0
        delay = c.backoff
        c.backoff = (
            self.agent.backoff_base
            if c.backoff == 0
            else min(c.backoff * 2, self.agent.backoff_max)
        )
        c.next_start = now + delay

    def _check_terminal(self) -> None:
        mains = [c for c in self.containers if not c.init]
        policy = self._policy()
        if policy == "Always":
            return
        done = all("terminated" in c.state and not c.running() for c in mains)
        if not done:
            return
        codes = [c.state["terminated"]["exitCode"] for c in mains]
        if policy == "OnFailure" and any(codes):
            return
        self.terminal = True

    # -- phase / status
    def _phase(self) -> str:
        mains = [c for c in self.containers if not c.init]
        if self.terminal:
            if not self.init_done:
                return "Failed"
            codes = [c.state.get("terminated", {}).get("exitCode", 1) for c in mains]
            return "Succeeded" if all(x == 0 for x in codes) else "Failed"
        if not self.init_done:
            return "Pending"
        if any(c.started_mono for c in mains):
            return "Running"
        return "Pending"

    def _status(self) -> Obj:
        mains = [c for c in self.containers if not c.init]
        inits = [c for c in self.containers if c.init]
        images = {
            c["name"]: c.get("image", "")
            for c in [
                *(self.pod["spec"].get("initContainers") or []),
                *self.pod["spec"]["containers"],
            ]
        }
        phase = self._phase()
        all_ready = all(c.ready for c in mains) and phase == "Running"
        prev = {c["type"]: c for c in (self.pod.get("status") or {}).get("conditions") or []}

        def cond(type_: str, ok: bool, reason: str = "") -> Obj:
            status = "True" if ok else "False"
            p = prev.get(type_)
            since = p["lastTransitionTime"] if p and p.get("status") == status else now_iso()
            c: Obj = {"type": type_, "status": status, "lastTransitionTime": since}
            if not ok and reason:
                c["reason"] = reason
            return c

        conds = [
            cond("PodReadyToStartContainers", self.pod_ip is not None),
            cond("Initialized", self.init_done, "ContainersNotInitialized"),
            cond("Ready", all_ready, "ContainersNotReady"),
            cond("ContainersReady", all_ready, "ContainersNotReady"),
            cond("PodScheduled", True),
        ]
        if self.volume_error and not self.volumes_ready:
            for c in self.containers:
                c.state = {"waiting": {"reason": "ContainerCreating", "message": self.volume_error}}
        status: Obj = {
            "phase": phase,
            "conditions": conds,
            "hostIP": self.agent.api_host,
            "hostIPs": [{"ip": self.agent.api_host}],
            "startTime": self.start_time,
            "containerStatuses": [c.status(images[c.name]) for c in mains],
        }
        if self.pod_ip:
            status["podIP"] = self.pod_ip
            status["podIPs"] = [{"ip": self.pod_ip}]
        if inits:
            status["initContainerStatuses"] = [c.status(images[c.name]) for c in inits]
        return status

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
            self.core().patch_namespaced_pod_status(
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

    # -- volumes
    def _volume_dir(self, name: str) -> Path:
        return self.dir / "volumes" / name

    def _write_volumes(self) -> None:
        spec = self.pod["spec"]
        for v in spec.get("volumes") or []:
            d = self._volume_dir(v["name"])
            d.mkdir(parents=True, exist_ok=True)
            if "emptyDir" in v or "hostPath" in v:
                continue
            files = self._volume_files(v)
            if files is None:
                continue
            sync_dir(d, files)

    def _volume_files(self, v: Obj) -> dict[str, tuple[bytes, int]] | None:
        if "configMap" in v:
            return self._source_files(v["configMap"], "configMap", 0o644)
        if "secret" in v:
            src = dict(v["secret"])
            src["name"] = src.get("secretName")
            return self._source_files(src, "secret", 0o644)
        if "downwardAPI" in v:
            return self._downward_files(v["downwardAPI"], 0o644)
        if "projected" in v:
            mode = v["projected"].get("defaultMode", 0o644)
            files: dict[str, tuple[bytes, int]] = {}
            for s in v["projected"].get("sources") or []:
                if "configMap" in s:
                    files.update(
                        self._source_files(
                            {**s["configMap"], "defaultMode": mode}, "configMap", mode
                        )
                        or {}
                    )
                elif "secret" in s:
                    files.update(
                        self._source_files({**s["secret"], "defaultMode": mode}, "secret", mode)
                        or {}
                    )
                elif "downwardAPI" in s:
                    files.update(
                        self._downward_files({**s["downwardAPI"], "defaultMode": mode}, mode)
                    )
                elif "serviceAccountToken" in s:
                    files.update(self._token_file(s["serviceAccountToken"], mode))
            return files
        return None

    def _source_files(
        self, src: Obj, kind: str, default_mode: int
    ) -> dict[str, tuple[bytes, int]] | None:
        from kubernetes import client

        name = src.get("name")
        mode = src.get("defaultMode", default_mode)
        try:
            if kind == "configMap":
                obj = json.loads(
                    self.core()
                    .read_namespaced_config_map(name, self.namespace, _preload_content=False)
                    .data
                )
                data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
                data.update(
                    {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
                )
            else:
                obj = json.loads(
                    self.core()
                    .read_namespaced_secret(name, self.namespace, _preload_content=False)
                    .data
                )
                data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        except client.ApiException as e:
            if e.status == 404:
                if src.get("optional"):
                    return {}
                raise VolumeError(f'{kind} "{name}" not found') from e
            raise
        items = src.get("items")
        if not items:
            return {k: (v, mode) for k, v in data.items()}
        out = {}
        for it in items:
            if it["key"] not in data:
                if src.get("optional"):
                    continue
                raise VolumeError(f'key "{it["key"]}" not found in {kind} "{name}"')
            out[it["path"]] = (data[it["key"]], it.get("mode", mode))
        return out

    def _downward_files(self, src: Obj, default_mode: int) -> dict[str, tuple[bytes, int]]:
        out = {}
        mode = src.get("defaultMode", default_mode)
        for it in src.get("items") or []:
            if "fieldRef" in it:
                val = self._field_ref(it["fieldRef"]["fieldPath"])
            else:
                val = self._resource_ref(it["resourceFieldRef"], None)
            out[it["path"]] = (val.encode(), it.get("mode", mode))
        return out

    def _token_file(self, src: Obj, mode: int) -> dict[str, tuple[bytes, int]]:
        now = time.monotonic()
        path = self.dir / "tokens" / src["path"].replace("/", "_")
        if path.exists() and now < self.token_refresh_at.get(src["path"], 0):
            return {src["path"]: (path.read_bytes(), mode)}
        exp = int(src.get("expirationSeconds") or 3600)
        spec: Obj = {
            "expirationSeconds": exp,
            "boundObjectRef": {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": self.name,
                "uid": self.uid,
            },
        }
        if src.get("audience"):
            spec["audiences"] = [src["audience"]]
        sa = self.pod["spec"].get("serviceAccountName") or "default"
        resp = self.core().create_namespaced_service_account_token(
            sa, self.namespace, {"spec": spec}, _preload_content=False
        )
        token = json.loads(resp.data)["status"]["token"].encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(token)
        self.token_refresh_at[src["path"]] = now + exp * 0.8
        return {src["path"]: (token, mode)}

    # -- env
    def _field_ref(self, path: str) -> str:
        md = self.pod["metadata"]
        simple = {
            "metadata.name": md["name"],
            "metadata.namespace": md["namespace"],
            "metadata.uid": md["uid"],
            "spec.nodeName": self.pod["spec"].get("nodeName", ""),
            "spec.serviceAccountName": self.pod["spec"].get("serviceAccountName", ""),
            "status.podIP": self.pod_ip or "",
            "status.podIPs": self.pod_ip or "",
            "status.hostIP": self.agent.api_host,
            "status.hostIPs": self.agent.api_host,
        }
        if path in simple:
            return str(simple[path])
        m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
        if m:
            return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
        if path in ("metadata.labels", "metadata.annotations"):
            d = md.get(path.split(".")[1]) or {}
            return "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
        return ""

    def _resource_ref(self, ref: Obj, container: Obj | None) -> str:
        name = ref.get("containerName")
        c = container
        if name:
            c = next((x for x in self.pod["spec"]["containers"] if x["name"] == name), container)
        res = ref["resource"]  # e.g. limits.cpu
        kind, _, rname = res.partition(".")
        val = ((c or {}).get("resources") or {}).get(kind, {}).get(rname)
        if val is None:
            val = {"cpu": self.agent.cpu, "memory": self.agent.memory}.get(rname, "0")
        if rname == "cpu":
            q = str(val)
            cores = float(q[:-1]) / 1000 if q.endswith("m") else float(q)
            div = ref.get("divisor", "1")
            d = float(div[:-1]) / 1000 if str(div).endswith("m") else float(div)
            import math

            return str(math.ceil(cores / d))
        return str(parse_quantity(str(val)))

    def _env(self, c: Obj) -> dict[str, str]:
        from kubernetes import client

        env: dict[str, str] = {
            "PATH": f"{self.agent.venv}/bin:{DEFAULT_PATH}",
            "HOSTNAME": self.pod["spec"].get("hostname") or self.name[:63],
            "HOME": os.environ.get("HOME", "/root"),
            "LANG": "C.UTF-8",
            "KUBERNETES_SERVICE_HOST": self.agent.api_host,
            "KUBERNETES_SERVICE_PORT": str(self.agent.api_port),
            "KUBERNETES_SERVICE_PORT_HTTPS": str(self.agent.api_port),
            "KUBERNETES_PORT": f"tcp://{self.agent.api_host}:{self.agent.api_port}",
        }
        core = self.core()

        def cm(name: str) -> Obj:
            r = core.read_namespaced_config_map(name, self.namespace, _preload_content=False)
            return dict(json.loads(r.data).get("data") or {})

        def secret(name: str) -> Obj:
            r = core.read_namespaced_secret(name, self.namespace, _preload_content=False)
            raw = json.loads(r.data).get("data") or {}
            return {k: base64.b64decode(v).decode(errors="replace") for k, v in raw.items()}

        for ef in c.get("envFrom") or []:
            prefix = ef.get("prefix", "")
            ref = ef.get("configMapRef") or ef.get("secretRef") or {}
            try:
                data = cm(ref["name"]) if "configMapRef" in ef else secret(ref["name"])
            except client.ApiException as exc:
                if exc.status == 404 and ref.get("optional"):
                    continue
                raise EnvError(f"envFrom {ref.get('name')}: {exc.reason}") from exc
            for k, v in data.items():
                env[prefix + k] = v
        for e in c.get("env") or []:
            name = e["name"]
            if "valueFrom" not in e:
                env[name] = expand(e.get("value", ""), env)
                continue
            vf = e["valueFrom"]
            if "fieldRef" in vf:
                env[name] = self._field_ref(vf["fieldRef"]["fieldPath"])
            elif "resourceFieldRef" in vf:
                env[name] = self._resource_ref(vf["resourceFieldRef"], c)
            else:
                ref = vf.get("configMapKeyRef") or vf.get("secretKeyRef") or {}
                try:
                    data = cm(ref["name"]) if "configMapKeyRef" in vf else secret(ref["name"])
                except client.ApiException as ex:
                    if ex.status == 404 and ref.get("optional"):
                        continue
                    raise EnvError(f"{name}: {ref.get('name')} not found") from ex
                if ref["key"] not in data:
                    if ref.get("optional"):
                        continue
                    raise EnvError(f"{name}: key {ref['key']} not found in {ref['name']}")
                env[name] = data[ref["key"]]
        return env

    # -- processes
    def _start_container(self, c: Container, now: float) -> None:
        spec = c.spec
        image = spec.get("image", "")
        mapped = map_image(image)
        if mapped is None:
            if not c.image_error_since:
                c.image_error_since = now
            reason = "ErrImagePull" if now - c.image_error_since < 5 else "ImagePullBackOff"
            msg = (
                f'image "{image}" is not mapped to a local installation by the infleet node '
                "agent (see e2e/README.md)"
            )
            c.state = {"waiting": {"reason": reason, "message": msg}}
            return
        try:
            env = self._env(spec)
        except EnvError as e:
            c.state = {"waiting": {"reason": "CreateContainerConfigError", "message": str(e)}}
            c.next_start = now + 2
            return
        command = spec.get("command")
        args = spec.get("args")
        if command:
            argv = list(command) + list(args or [])
        else:
            argv = mapped.entrypoint + (list(args) if args is not None else mapped.cmd)
        argv = [expand(a, env) for a in argv]
        if not argv:
            c.state = {"waiting": {"reason": "CreateContainerError", "message": "no command"}}
            return
        argv[0] = resolve_exe(argv[0], self.agent.venv)
        script = self._mount_script(c)
        c.log_file.parent.mkdir(parents=True, exist_ok=True)
        launcher: list[str] = []
        if self.netns:
            launcher = ["ip", "netns", "exec", self.netns]
        launcher += ["unshare", "--mount", "--uts", "--propagation", "private"]
        launcher += ["/bin/sh", str(script)]
        with c.log_file.open("ab") as f:
            f.write(f"==== {now_iso()} starting: {shlex.join(argv)}\n".encode())
            f.flush()
            try:
                c.proc = subprocess.Popen(
                    launcher + argv,
                    stdout=f,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=env,
                    start_new_session=True,
                    cwd="/",
                )
            except OSError as e:
                c.state = {"waiting": {"reason": "RunContainerError", "message": str(e)}}
                c.next_start = now + 5
                return
        if c.started_mono:
            c.restart_count += 1
        c.started_mono = now
        c.state = {"running": {"startedAt": now_iso()}}
        c.probes = {
            k: Probe(
                spec[f"{k}Probe"],
                k,
                next_at=now + float(spec[f"{k}Probe"].get("initialDelaySeconds", 0)),
            )
            for k in ("startup", "readiness", "liveness")
            if spec.get(f"{k}Probe")
        }
        c.started = "startup" not in c.probes
        c.ready = not c.init and "readiness" not in c.probes and c.started
        log.info("pod %s container %s started pid %s: %s", self.key, c.name, c.proc.pid, argv)

    def _mount_script(self, c: Container) -> Path:
        vols = {v["name"]: v for v in self.pod["spec"].get("volumes") or []}
        lines = ["set -e", f"hostname {shlex.quote(self._hostname())} 2>/dev/null || true"]
        # Volume sources live under the pod's run dir; a mount over one of its ancestors
        # (e.g. an emptyDir at /tmp) would hide the sources of the mounts after it.
        for m in sorted(c.spec.get("volumeMounts") or [], key=self._hides_run_dir):
            v = vols.get(m["name"])
            if v is None:
                continue
            src = Path(v["hostPath"]["path"]) if "hostPath" in v else self._volume_dir(m["name"])
            if (
                "hostPath" in v
                and not src.exists()
                and v["hostPath"].get("type")
                in (
                    "DirectoryOrCreate",
                    None,
                    "",
                )
            ):
                src.mkdir(parents=True, exist_ok=True)
            if m.get("subPath"):
                src = src / m["subPath"]
                if not src.exists():
                    src.mkdir(parents=True, exist_ok=True)
            target = Path(m["mountPath"])
            self.agent.mounts.acquire(target, src.is_file(), self.mount_user)
            q, t = shlex.quote(str(src)), shlex.quote(str(target))
            lines.append(f"mount --bind {q} {t}")
            if m.get("readOnly"):
                lines.append(f"mount -o remount,bind,ro {t}")
        wd = c.spec.get("workingDir")
        if wd:
            lines.append(f"mkdir -p {shlex.quote(wd)} && cd {shlex.quote(wd)}")
        lines.append('exec "$@"')
        script = self.dir / f"{c.name}.sh"
        script.write_text("\n".join(lines) + "\n")
        return script

    def _hides_run_dir(self, mount: dict[str, Any]) -> bool:
        target = Path(mount["mountPath"])
        return target == self.dir or target in self.dir.parents

    def _hostname(self) -> str:
        return str(self.pod["spec"].get("hostname") or self.name)[:63]

    # -- probes
    def _run_probes(self, c: Container, now: float) -> None:
        for kind in ("startup", "liveness", "readiness"):
            p = c.probes.get(kind)
            if p is None or now < p.next_at:
                continue
            if kind != "startup" and not c.started:
                continue
            if kind == "startup" and c.started:
                continue
            p.next_at = now + float(p.spec.get("periodSeconds", 10))
            ok = self._probe_once(c, p.spec)
            if ok:
                p.successes += 1
                p.failures = 0
            else:
                p.failures += 1
                p.successes = 0
            fail_thr = int(p.spec.get("failureThreshold", 3))
            succ_thr = int(p.spec.get("successThreshold", 1))
            if kind == "startup":
                if ok:
                    c.started = True
                    c.ready = "readiness" not in c.probes
                    for k in ("liveness", "readiness"):
                        if k in c.probes:
                            c.probes[k].next_at = now
                elif p.failures >= fail_thr:
                    self._kill_container(c, "Startup probe failed")
                    return
            elif kind == "readiness":
                if ok and p.successes >= succ_thr:
                    c.ready = True
                elif not ok and p.failures >= fail_thr:
                    c.ready = False
            elif kind == "liveness" and not ok and p.failures >= fail_thr:
                self._kill_container(c, "Liveness probe failed")
                return

    def _probe_once(self, c: Container, spec: Obj) -> bool:
        timeout = float(spec.get("timeoutSeconds", 1))
        try:
            if "httpGet" in spec:
                hg = spec["httpGet"]
                port = self._port(c, hg["port"])
                host = hg.get("host") or self.pod_ip or "127.0.0.1"
                cls = (
                    http.client.HTTPSConnection
                    if hg.get("scheme") == "HTTPS"
                    else http.client.HTTPConnection
                )
                kw: dict[str, Any] = {}
                if cls is http.client.HTTPSConnection:
                    import ssl

                    kw["context"] = ssl._create_unverified_context()
                conn = cls(host, port, timeout=timeout, **kw)
                headers = {h["name"]: h["value"] for h in hg.get("httpHeaders") or []}
                headers.setdefault("User-Agent", "kube-probe/1.35")
                conn.request("GET", hg.get("path", "/"), headers=headers)
                code = conn.getresponse().status
                conn.close()
                return 200 <= code < 400
            if "tcpSocket" in spec:
                port = self._port(c, spec["tcpSocket"]["port"])
                host = spec["tcpSocket"].get("host") or self.pod_ip or "127.0.0.1"
                with socket.create_connection((host, port), timeout=timeout):
                    return True
            if "exec" in spec:
                return self._exec_in(c, spec["exec"]["command"], timeout) == 0
            return True  # grpc probes: not implemented, treated as passing
        except (OSError, http.client.HTTPException, subprocess.TimeoutExpired):
            return False

    def _port(self, c: Container, port: Any) -> int:
        if isinstance(port, int) or str(port).isdigit():
            return int(port)
        for p in c.spec.get("ports") or []:
            if p.get("name") == port:
                return int(p["containerPort"])
        raise OSError(f"unknown named port {port}")

    def _exec_in(self, c: Container, cmd: list[str], timeout: float) -> int:
        if c.proc is None:
            return 1
        argv = ["nsenter", "-t", str(c.proc.pid), "-m", "-u", "-n", "--", *cmd]
        env = {"PATH": f"{self.agent.venv}/bin:{DEFAULT_PATH}"}
        return subprocess.run(argv, capture_output=True, timeout=timeout, env=env).returncode

    def _kill_container(self, c: Container, reason: str) -> None:
        log.info("pod %s container %s: %s, killing", self.key, c.name, reason)
        c.killing_reason = reason
        grace = float(self.pod["spec"].get("terminationGracePeriodSeconds", 30))
        self._terminate([c], grace)

    def _terminate(self, cs: list[Container], grace: float) -> None:
        procs = [c.proc for c in cs if c.proc is not None and c.proc.poll() is None]
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for p in procs:
            try:
                p.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait()

    def _kill_all(self, grace: float) -> None:
        self._terminate(self.containers, grace)

    # -- shutdown
    def _shutdown(self) -> None:
        grace = self.grace
        t0 = time.monotonic()
        if not self.gone.is_set():
            for c in self.containers:
                if c.running() and not c.init:
                    self._pre_stop(c, grace)
        remaining = max(0.0, grace - (time.monotonic() - t0))
        self._kill_all(remaining)
        now = time.monotonic()
        for c in self.containers:
            if c.proc is not None:
                self._reap(c, now)
            c.ready = False
        log.info("pod %s stopped", self.key)

    def _pre_stop(self, c: Container, grace: float) -> None:
        hook = (c.spec.get("lifecycle") or {}).get("preStop")
        if not hook:
            return
        try:
            if "sleep" in hook:
                time.sleep(min(float(hook["sleep"].get("seconds", 0)), grace))
            elif "exec" in hook:
                self._exec_in(c, hook["exec"]["command"], grace)
            elif "httpGet" in hook:
                self._probe_once(c, {"httpGet": hook["httpGet"], "timeoutSeconds": grace})
        except Exception as e:
            log.info("preStop hook of %s/%s failed: %s", self.key, c.name, e)

    def _cleanup(self) -> None:
        if self.cleaned:
            return
        self.cleaned = True
        if self.netns:
            self.agent.network.remove_pod(self.pod_id, self.pod_ip)
        self.agent.mounts.release(self.mount_user)

    def _delete_object(self) -> None:
        from kubernetes import client

        self._push_status(force=True)
        try:
            self.core().delete_namespaced_pod(
                self.name,
                self.namespace,
                body={"gracePeriodSeconds": 0, "preconditions": {"uid": self.uid}},
            )
        except client.ApiException as e:
            if e.status not in (404, 409):
                log.warning("final delete of %s failed: %s", self.key, e.reason)


class VolumeError(RuntimeError):
    pass


class EnvError(RuntimeError):
    pass


def sync_dir(d: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Make ``d`` hold exactly ``files`` (atomic per-file replace, in place)."""
    for rel, (data, mode) in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            if p.read_bytes() == data and (p.stat().st_mode & 0o777) == mode:
                continue
        except OSError:
            pass
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        os.replace(tmp, p)
    wanted = {str(d / r) for r in files}
    for root, _dirs, names in os.walk(d):
        for n in names:
            full = os.path.join(root, n)
            if full not in wanted:
                with contextlib.suppress(OSError):
                    os.unlink(full)


_SUFFIX = {
    "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
    "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "m": 0.001,
}  # fmt: skip


def parse_quantity(q: str) -> int:
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", q.strip())
    if not m:
        return 0
    return int(float(m.group(1)) * _SUFFIX.get(m.group(2), 1))
