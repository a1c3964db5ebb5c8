"""The operator as a process on the harness cluster: e2e tests, bench/bench_operator.py, demo.

- :func:`install_operator_prereqs`: CRDs (ours + kopf peering) and the RBAC of
  manifests/base/rbac.yaml, then a kubeconfig carrying a TokenRequest token of
  the operator's ServiceAccount: the operator runs with exactly that ClusterRole,
  so a missing permission fails a test.
- :class:`OperatorProcess`: ``infleet-operator`` as a host subprocess (pods would
  need in-cluster routing to reach the API server; the host reaches it directly).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from testkit import free_port

ROOT = Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "infleet.dev", "v1alpha1", "inferencedeployments"
OP_NAMESPACE = "infleet-system"
OP_SA = "infleet-operator"


def kubectl(cluster: Any, *args: str, input: str | None = None, check: bool = True) -> str:
    out = subprocess.run(
        [str(cluster.kubectl), *args],
        input=input,
        capture_output=True,
        text=True,
        env=dict(os.environ, KUBECONFIG=str(cluster.kubeconfig)),
        check=False,
    )
    if check and out.returncode != 0:
        raise RuntimeError(f"kubectl {' '.join(args)} failed: {out.stderr.strip()}")
    return out.stdout + out.stderr


def install_operator_prereqs(cluster: Any, workdir: Path) -> Path:
    """Install CRDs + RBAC; return a kubeconfig authenticated as the operator's SA."""
    kubectl(cluster, "apply", "--server-side", "-f", str(ROOT / "crds"))
    kubectl(
        cluster,
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        f"crd/{PLURAL}.{GROUP}",
        "crd/clusterkopfpeerings.kopf.dev",
    )
    if "NotFound" in kubectl(cluster, "get", "ns", OP_NAMESPACE, check=False):
        kubectl(cluster, "create", "namespace", OP_NAMESPACE)
    kubectl(cluster, "apply", "--server-side", "-f", str(ROOT / "manifests/base/rbac.yaml"))
    token = kubectl(cluster, "create", "token", OP_SA, "-n", OP_NAMESPACE, "--duration=6h").strip()
    kc = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {
                "name": "e2e",
                "cluster": {
                    "server": cluster.server,
                    "certificate-authority": str(cluster.ca_file),
                },
            }
        ],
        "users": [{"name": OP_SA, "user": {"token": token}}],
        "contexts": [{"name": "op", "context": {"cluster": "e2e", "user": OP_SA}}],
        "current-context": "op",
    }
    path = workdir / "operator.kubeconfig"
    path.write_text(yaml.safe_dump(kc))
    path.chmod(0o600)
    return path


@dataclass
class OperatorProcess:
    """One ``infleet-operator`` replica. ``name`` is its POD_NAME (identity + priority)."""

    kubeconfig: Path
    logdir: Path
    name: str = "infleet-operator-e2e-0"
    extra_env: dict[str, str] = field(default_factory=dict)
    args: list[str] = field(default_factory=list)
    proc: subprocess.Popen[bytes] | None = None
    health_port: int = 0
    metrics_port: int = 0

    @property
    def log(self) -> Path:
        return self.logdir / f"{self.name}.log"

    def start(self) -> OperatorProcess:
        assert not self.running()
        self.health_port, self.metrics_port = free_port(), free_port()
        env = dict(
            os.environ,
            KUBECONFIG=str(self.kubeconfig),
            POD_NAME=self.name,
            **self.extra_env,
        )
        env.pop("KUBERNETES_SERVICE_HOST", None)
        argv = [
            sys.executable,
            "-m",
            "infleet_operator.main",
            "--health-port",
            str(self.health_port),
            "--metrics-port",
            str(self.metrics_port),
            *self.args,
        ]
        with self.log.open("ab") as f:
            f.write(f"\n===== start {time.strftime('%X')} {argv}\n".encode())
            self.proc = subprocess.Popen(
                argv, stdout=f, stderr=subprocess.STDOUT, env=env, start_new_session=True
            )
        return self

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def wait_log(self, needle: str, timeout: float = 60, since: int = 0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if needle in self.text()[since:]:
                return
            if not self.running():
                raise RuntimeError(f"operator exited:\n{self.text()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"{needle!r} not in operator log:\n{self.text()[-3000:]}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def rss_mib(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0
