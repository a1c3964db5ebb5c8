"""A cluster of its own, started and stopped: nothing may be left behind."""

from __future__ import annotations

import contextlib
import json
import os
import socket
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from kube_harness import net
from kube_harness.cluster import Cluster
from kube_harness.testing import wait_for

pytestmark = pytest.mark.cluster


def _listening(host: str, port: int) -> bool:
    """Connect test: only for addresses that exist right now (a live pod, the gateway)."""
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _listen_ports() -> set[int]:
    """Ports in LISTEN state in the host network namespace (no traffic sent)."""
    ports = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(f).read_text().splitlines()[1:]:
                parts = line.split()
                if parts[3] == "0A":
                    ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_teardown_leaves_nothing_behind(cluster_binaries: Any, tmp_path: Path) -> None:
    c = Cluster(run_dir=tmp_path / "kube", nodes=1, binaries=cluster_binaries)
    c.start()
    print(f"harness start time: {c.start_seconds:.1f}s")
    try:
        assert c.network is not None
        slot, gateway, bridge = c.network.slot, c.gateway, c.network.bridge
        core: Any = client.CoreV1Api(c.api_client())
        core.create_namespaced_pod(
            "default",
            {
                "metadata": {"name": "sleeper"},
                "spec": {
                    "containers": [
                        {
                            "name": "c",
                            "image": "python:3.11",
                            "command": ["python", "-m", "http.server", "8000"],
                        }
                    ]
                },
            },
        )
        pod = wait_for(
            lambda: (
                (p := core.read_namespaced_pod("sleeper", "default")).status.phase == "Running"
                and p
            ),
            timeout=60,
            what="sleeper running",
        )
        pod_ip = pod.status.pod_ip
        wait_for(lambda: _listening(pod_ip, 8000), timeout=20, what="pod serving")
        assert c.agent is not None
        pids = [p for v in c.agent.processes().values() for p in v]
        pids += [comp.proc.pid for comp in c.components.values() if comp.proc]
        ports = [c.api_port, *c.component_ports]
        assert set(ports) <= _listen_ports()
        netns = [n for n in net.list_netns() if n.startswith(f"infleet{slot}-")]
        assert netns and net.link_exists(bridge)
    finally:
        c.stop()
    assert not [p for p in pids if _alive(p)], "processes left behind"
    assert not [n for n in net.list_netns() if n.startswith(f"infleet{slot}-")]
    assert not net.link_exists(bridge)
    left = net.ip("-o", "link").stdout
    assert f"inf{slot}v" not in left
    # nothing may be sent to the gateway or pod IPs now: they no longer exist
    assert not set(ports) & _listen_ports(), "ports still listening"
    assert not net.link_exists(bridge)
    del gateway


def test_cli_up_status_down(cluster_binaries: Any, tmp_path: Path) -> None:
    """`make cluster-up` / `make cluster-down` as a person runs them."""
    import subprocess
    import sys

    run_dir = tmp_path / "run"
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).parent))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "kube_harness.cli", *args, "--run-dir", str(run_dir)],
            env=env,
            text=True,
            capture_output=True,
            timeout=180,
        )

    up = cli("up", "--nodes", "1")
    assert up.returncode == 0, up.stderr + up.stdout
    kubeconfig = run_dir / "kubeconfig"
    assert f"export KUBECONFIG={kubeconfig}" in up.stdout
    try:
        st = json.loads((run_dir / "state.json").read_text())
        slot = int(st["slot"])
        out = subprocess.run(
            [str(cluster_binaries.kubectl), "get", "nodes", "-o", "name"],
            env=dict(os.environ, KUBECONFIG=str(kubeconfig)),
            text=True,
            capture_output=True,
            timeout=60,
        )
        assert out.stdout.strip() == "node/infleet-node-0", out.stderr
        assert cli("status").returncode == 0
        pids = [int(st["pid"]), *(int(p) for p in st["components"].values())]
    finally:
        down = cli("down")
    assert down.returncode == 0, down.stderr
    assert cli("status").returncode == 1
    assert not [p for p in pids if _alive(p)]
    assert not net.link_exists(f"infleet{slot}")
    assert not [n for n in net.list_netns() if n.startswith(f"infleet{slot}-")]
