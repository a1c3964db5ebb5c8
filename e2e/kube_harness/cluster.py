"""Start/stop a real Kubernetes control plane (etcd, kube-apiserver,
kube-controller-manager, kube-scheduler) plus the node agent.

The API server binds and advertises on the bridge gateway address (not
loopback: the endpoint reconciler and EndpointSlices refuse loopback), so the
host and every pod reach it at ``https://<gateway>:<port>``.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kube_harness import pki
from kube_harness.build import Binaries, find_binaries
from kube_harness.net import SERVICE_CIDR, Network
from testkit import free_port

SA_ISSUER = "https://kubernetes.default.svc.cluster.local"


@dataclass
class Component:
    name: str
    argv: list[str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self, env: dict[str, str] | None = None) -> None:
        with self.log.open("ab") as f:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=f,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
                env=env,
            )

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> None:
        p = self.proc
        if p is None or p.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGTERM)
        try:
            p.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(p.pid, signal.SIGKILL)
            p.wait()

    def tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


class ClusterStartError(RuntimeError):
    pass


@dataclass
class Cluster:
    """A running control plane (+ node agent). Use as a context manager or start()/stop()."""

    run_dir: Path | None = None
    nodes: int = 2
    gpus_per_node: int = 2
    node_cpu: str = "8"
    node_memory: str = "32Gi"
    with_agent: bool = True
    binaries: Binaries | None = None
    log_level: int = 1

    # filled by start()
    network: Network | None = field(default=None, init=False)
    components: dict[str, Component] = field(default_factory=dict, init=False)
    kubeconfig: Path = field(default=Path(), init=False)
    server: str = field(default="", init=False)
    api_port: int = field(default=0, init=False)
    component_ports: list[int] = field(default_factory=list, init=False)
    pki_dir: Path = field(default=Path(), init=False)
    start_seconds: float = field(default=0.0, init=False)
    agent: Any = field(default=None, init=False)

    # ---- conveniences --------------------------------------------------------------
    @property
    def gateway(self) -> str:
        """Bridge gateway IP: a host address every pod can reach (bind host services here)."""
        assert self.network is not None
        return self.network.gateway

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def kubectl(self) -> Path:
        assert self.binaries is not None
        return self.binaries.kubectl

    @property
    def helm(self) -> Path:
        assert self.binaries is not None
        return self.binaries.helm

    @property
    def env(self) -> dict[str, str]:
        """Environment for kubectl/helm/operators pointed at this cluster."""
        assert self.run_dir is not None
        h = self.run_dir / "helm"
        return dict(
            os.environ,
            KUBECONFIG=str(self.kubeconfig),
            HELM_CACHE_HOME=str(h / "cache"),
            HELM_CONFIG_HOME=str(h / "config"),
            HELM_DATA_HOME=str(h / "data"),
        )

    def api_client(self) -> Any:
        """A fresh ``kubernetes.client.ApiClient`` for this cluster (admin credentials)."""
        from kubernetes import client, config

        cfg = client.Configuration()
        config.load_kube_config(config_file=str(self.kubeconfig), client_configuration=cfg)
        return client.ApiClient(cfg)

    def run_kubectl(self, *args: str, check: bool = True, input: str | None = None) -> str:
        p = subprocess.run(
            [str(self.kubectl), *args], env=self.env, text=True, capture_output=True, input=input
        )
        if check and p.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed: {p.stderr}")
        return p.stdout

    def run_helm(self, *args: str, check: bool = True) -> str:
        p = subprocess.run([str(self.helm), *args], env=self.env, text=True, capture_output=True)
        if check and p.returncode != 0:
            raise RuntimeError(f"helm {' '.join(args)} failed: {p.stderr}")
        return p.stdout

    def logs(self, lines: int = 60) -> str:
        """Tails of every component log (for test failure reports)."""
        out = [f"run dir: {self.run_dir}"]
        for c in self.components.values():
            state = "running" if c.alive() else f"exited {c.proc.returncode if c.proc else '?'}"
            out.append(f"===== {c.name} ({state}) {c.log} =====\n{c.tail(lines)}")
        if self.agent is not None:
            out.append(self.agent.describe())
        return "\n".join(out)

    # ---- lifecycle -----------------------------------------------------------------
    def __enter__(self) -> Cluster:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> Cluster:
        t0 = time.monotonic()
        if self.binaries is None:
            self.binaries = find_binaries()
        if self.run_dir is None:
            self.run_dir = Path(tempfile.mkdtemp(prefix="infleet-cluster-"))
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.run_dir / "logs").mkdir(exist_ok=True)
        try:
            self._start(t0)
        except BaseException:
            print(f"[kube_harness] cluster start failed; logs in {self.run_dir}/logs")
            with contextlib.suppress(Exception):
                print(self.logs(30))
            self.stop()
            raise
        self.start_seconds = time.monotonic() - t0
        self._write_state()
        return self

    def _start(self, t0: float) -> None:
        assert self.run_dir is not None and self.binaries is not None
        b = self.binaries
        self.network = net = Network.create(self.run_dir)
        gw = net.gateway
        d = self.pki_dir = self.run_dir / "pki"
        pki.make_ca(d)
        service_ip = SERVICE_CIDR.split("/")[0].rsplit(".", 1)[0] + ".1"
        pki.make_cert(
            d, "apiserver", "kube-apiserver", server=True, client=False,
            ips=[gw, "127.0.0.1", service_ip],
            dns=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc",
                 "kubernetes.default.svc.cluster.local"],
        )  # fmt: skip
        pki.make_cert(d, "admin", "infleet-admin", "system:masters")
        pki.make_cert(d, "kcm", "system:kube-controller-manager")
        pki.make_cert(d, "scheduler", "system:kube-scheduler")
        pki.make_sa_keys(d)

        self.api_port = free_port(gw)
        self.server = f"https://{gw}:{self.api_port}"
        self.kubeconfig = pki.write_kubeconfig(
            self.run_dir / "kubeconfig", self.server, d / "ca.crt", d / "admin.crt",
            d / "admin.key", "admin",
        )  # fmt: skip
        kcm_kc = pki.write_kubeconfig(
            d / "kcm.kubeconfig", self.server, d / "ca.crt", d / "kcm.crt", d / "kcm.key", "kcm"
        )
        sched_kc = pki.write_kubeconfig(
            d / "scheduler.kubeconfig", self.server, d / "ca.crt", d / "scheduler.crt",
            d / "scheduler.key", "scheduler",
        )  # fmt: skip
        logs = self.run_dir / "logs"
        v = f"--v={self.log_level}"

        etcd_client, etcd_peer = free_port(), free_port()
        etcd = self._component(
            "etcd",
            [
                str(b.etcd),
                "--name=infleet",
                f"--data-dir={self.run_dir / 'etcd'}",
                f"--listen-client-urls=http://127.0.0.1:{etcd_client}",
                f"--advertise-client-urls=http://127.0.0.1:{etcd_client}",
                f"--listen-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-advertise-peer-urls=http://127.0.0.1:{etcd_peer}",
                f"--initial-cluster=infleet=http://127.0.0.1:{etcd_peer}",
                "--unsafe-no-fsync",
                "--quota-backend-bytes=2147483648",
                "--log-level=warn",
            ],
            logs,
        )
        etcd.start()
        self._wait_http(f"http://127.0.0.1:{etcd_client}/health", "etcd", 30, etcd)

        api = self._component(
            "kube-apiserver",
            [
                str(b.kube_apiserver),
                f"--etcd-servers=http://127.0.0.1:{etcd_client}",
                f"--bind-address={gw}",
                f"--advertise-address={gw}",
                f"--secure-port={self.api_port}",
                f"--cert-dir={d}",
                f"--tls-cert-file={d / 'apiserver.crt'}",
                f"--tls-private-key-file={d / 'apiserver.key'}",
                f"--client-ca-file={d / 'ca.crt'}",
                # front-proxy settings only so components stop logging their absence
                f"--requestheader-client-ca-file={d / 'ca.crt'}",
                "--requestheader-allowed-names=front-proxy-client",
                "--requestheader-username-headers=X-Remote-User",
                "--requestheader-group-headers=X-Remote-Group",
                "--requestheader-extra-headers-prefix=X-Remote-Extra-",
                f"--service-account-issuer={SA_ISSUER}",
                f"--service-account-key-file={d / 'sa.pub'}",
                f"--service-account-signing-key-file={d / 'sa.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--authorization-mode=Node,RBAC",
                "--enable-admission-plugins=NodeRestriction",
                "--allow-privileged=true",
                "--profiling=false",
                "--endpoint-reconciler-type=lease",
                v,
            ],
            logs,
        )
        api.start()
        self._wait_http(f"{self.server}/readyz", "kube-apiserver", 60, api)

        kcm_port, sched_port = free_port(), free_port()
        self.component_ports = [etcd_client, etcd_peer, kcm_port, sched_port]
        kcm = self._component(
            "kube-controller-manager",
            [
                str(b.kube_controller_manager),
                f"--kubeconfig={kcm_kc}",
                f"--authentication-kubeconfig={kcm_kc}",
                f"--authorization-kubeconfig={kcm_kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={kcm_port}",
                "--leader-elect=false",
                "--use-service-account-credentials=true",
                f"--root-ca-file={d / 'ca.crt'}",
                f"--service-account-private-key-file={d / 'sa.key'}",
                f"--cluster-signing-cert-file={d / 'ca.crt'}",
                f"--cluster-signing-key-file={d / 'ca.key'}",
                f"--service-cluster-ip-range={SERVICE_CIDR}",
                "--controllers=*,-cloud-node-lifecycle-controller,-service-lb-controller,"
                "-node-route-controller",
                v,
            ],
            logs,
        )
        sched = self._component(
            "kube-scheduler",
            [
                str(b.kube_scheduler),
                f"--kubeconfig={sched_kc}",
                f"--authentication-kubeconfig={sched_kc}",
                f"--authorization-kubeconfig={sched_kc}",
                "--bind-address=127.0.0.1",
                f"--secure-port={sched_port}",
                "--leader-elect=false",
                v,
            ],
            logs,
        )
        kcm.start()
        sched.start()
        self._wait_http(f"https://127.0.0.1:{kcm_port}/healthz", "kcm", 60, kcm)
        self._wait_http(f"https://127.0.0.1:{sched_port}/healthz", "scheduler", 60, sched)
        self._wait_default_serviceaccount(60)

        if self.with_agent:
            from kube_harness.nodeagent import NodeAgent

            self.agent = NodeAgent(
                api_client_factory=self.api_client,
                network=net,
                run_dir=self.run_dir / "pods",
                api_host=gw,
                api_port=self.api_port,
                nodes=[f"infleet-node-{i}" for i in range(self.nodes)],
                gpus_per_node=self.gpus_per_node,
                cpu=self.node_cpu,
                memory=self.node_memory,
                kubelet_version=b.kubernetes_version,
            )
            self.agent.start()

    def _component(self, name: str, argv: list[str], logs: Path) -> Component:
        c = Component(name, argv, logs / f"{name}.log")
        self.components[name] = c
        return c

    def _ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=str(self.ca_file))
        ctx.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        return ctx

    def _wait_http(self, url: str, what: str, timeout: float, comp: Component) -> None:
        ctx: ssl.SSLContext | None = None
        if url.startswith("https://127.0.0.1"):
            ctx = ssl._create_unverified_context()  # self-signed serving certs of kcm/scheduler
        elif url.startswith("https://"):
            ctx = self._ssl_context()
        deadline = time.monotonic() + timeout
        last = ""
        while time.monotonic() < deadline:
            if not comp.alive():
                raise ClusterStartError(f"{what} exited:\n{comp.tail()}")
            try:
                with urllib.request.urlopen(url, timeout=2, context=ctx) as r:
                    if r.status == 200:
                        return
            except Exception as e:
                last = str(e)
            time.sleep(0.2)
        raise ClusterStartError(f"{what} not ready at {url} after {timeout}s ({last})")

    def _wait_default_serviceaccount(self, timeout: float) -> None:
        from kubernetes import client

        api = client.CoreV1Api(self.api_client())
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                api.read_namespaced_service_account("default", "default")
                api.read_namespaced_config_map("kube-root-ca.crt", "default")
                return
            except client.ApiException as e:
                if e.status != 404:
                    raise
            time.sleep(0.3)
        raise ClusterStartError("default ServiceAccount / kube-root-ca.crt never appeared")

    def _write_state(self) -> None:
        assert self.run_dir is not None and self.network is not None
        state = {
            "pid": os.getpid(),
            "kubeconfig": str(self.kubeconfig),
            "server": self.server,
            "gateway": self.gateway,
            "slot": self.network.slot,
            "components": {n: c.proc.pid for n, c in self.components.items() if c.proc},
        }
        (self.run_dir / "state.json").write_text(json.dumps(state, indent=2))

    def stop(self) -> None:
        if self.agent is not None:
            with contextlib.suppress(Exception):
                self.agent.stop()
            self.agent = None
        # controllers first so nothing reacts to the agent going away
        for name in ("kube-scheduler", "kube-controller-manager", "kube-apiserver", "etcd"):
            c = self.components.get(name)
            if c is not None:
                # kube-apiserver stops listening at once but may linger for a while after
                # (endpoint lease removal): nothing here needs a clean etcd shutdown
                c.stop(timeout=3.0)
        if self.network is not None:
            self.network.destroy()
            self.network = None

    def remove_run_dir(self) -> None:
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)


@contextlib.contextmanager
def running_cluster(**kw: Any) -> Iterator[Cluster]:
    c = Cluster(**kw)
    c.start()
    try:
        yield c
    finally:
        c.stop()
