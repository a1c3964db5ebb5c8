"""Operator figures on the real control plane (kube_harness): prints, asserts nothing.

1. apply -> Ready: cpu-minimal-like fleet (2 workers) from ``create`` to status Ready,
   with the measured pod create-to-Ready time (status.podStartSeconds);
2. reconcile throughput with N InferenceDeployments and pod execution off (nodes
   cordoned: pods stay Pending, status Progressing/Degraded=Unschedulable): create
   all, time until every one has observedGeneration 1 and its status written; then a
   spec change to all of them (update throughput); operator RSS before/after/idle;
3. idle cost: the operator's CPU seconds over a quiet period with N objects.

    PYTHONPATH=e2e:bench:tests .venv/bin/python bench/bench_operator.py [--objects 100]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client

from fleet.operator import (
    GROUP,
    PLURAL,
    VERSION,
    OperatorProcess,
    install_operator_prereqs,
    kubectl,
)
from kube_harness.build import find_binaries
from kube_harness.cluster import Cluster

ROOT = Path(__file__).resolve().parents[1]


def spec(replicas: int = 1, batch: int = 16) -> dict[str, Any]:
    return {
        "model": {"name": "mlp", "source": "builtin://mlp", "parameters": {"width": "64"}},
        "engine": {"device": "cpu"},
        "batching": {"maxBatchSize": batch},
        "replicas": replicas,
        "resources": {"requests": {"cpu": "100m", "memory": "128Mi"}},
        "terminationGracePeriodSeconds": 10,
    }


def body(name: str, s: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "InferenceDeployment",
        "metadata": {"name": name},
        "spec": s,
    }


def ready(obj: dict[str, Any]) -> bool:
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c["type"] == "Ready":
            return bool(c["status"] == "True")
    return False


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def scrape(port: int, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name) and not line.startswith("#")
    )


def wait_all(co: Any, ns: str, n: int, generation: int, timeout: float = 600) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        items = co.list_namespaced_custom_object(GROUP, VERSION, ns, PLURAL)["items"]
        done = sum(
            1
            for o in items
            if (o.get("status") or {}).get("observedGeneration") == generation
            and (o.get("status") or {}).get("conditions")
        )
        if done >= n:
            return time.monotonic() - t0
        time.sleep(0.25)
    raise TimeoutError(f"only {done}/{n} reconciled")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--objects", type=int, default=100)
    p.add_argument("--skip-ready", action="store_true", help="skip the apply -> Ready figure")
    a = p.parse_args()
    work = Path(tempfile.mkdtemp(prefix="infleet-bench-operator-"))
    cluster = Cluster(run_dir=work / "kube", nodes=2, binaries=find_binaries(check=False))
    cluster.start()
    print(f"cluster started in {cluster.start_seconds:.1f}s")
    op = None
    try:
        kc = install_operator_prereqs(cluster, work)
        op = OperatorProcess(kc, work).start()
        op.wait_log("Resuming operations", timeout=90)
        api = cluster.api_client()
        co = client.CustomObjectsApi(api)
        core = client.CoreV1Api(api)
        rss0 = op.rss_mib()
        print(f"operator RSS at start: {rss0:.0f} MiB")

        if not a.skip_ready:
            core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="ready")))
            t0 = time.monotonic()
            co.create_namespaced_custom_object(
                GROUP, VERSION, "ready", PLURAL, body("fleet", spec(replicas=2))
            )
            while True:
                obj = co.get_namespaced_custom_object(GROUP, VERSION, "ready", PLURAL, "fleet")
                if ready(obj):
                    break
                if time.monotonic() - t0 > 300:
                    raise TimeoutError("fleet not Ready")
                time.sleep(0.1)
            took = time.monotonic() - t0
            print(
                f"apply -> Ready (2 CPU workers): {took:.1f}s; "
                f"podStartSeconds (pod create -> Ready): {obj['status'].get('podStartSeconds')}"
            )
            co.delete_namespaced_custom_object(GROUP, VERSION, "ready", PLURAL, "fleet")

        for node in ("infleet-node-0", "infleet-node-1"):
            kubectl(cluster, "cordon", node)
        ns = "bench"
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=ns)))
        n = a.objects
        pid: int = op.proc.pid  # type: ignore[union-attr]

        def phase(call: Callable[[int], object], generation: int) -> tuple[float, float, float]:
            """call(i) for every object, then wait until all reached ``generation``:
            (API seconds, seconds until all reconciled with status, operator CPU seconds)."""
            cpu0, t0 = cpu_seconds(pid), time.monotonic()
            for i in range(n):
                call(i)
            api_s = time.monotonic() - t0
            settled = wait_all(co, ns, n, generation)
            return api_s, api_s + settled, cpu_seconds(pid) - cpu0

        created, total_s, cpu = phase(
            lambda i: co.create_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, body(f"f{i:03d}", spec())
            ),
            1,
        )
        print(
            f"create {n} objects: API calls took {created:.1f}s; all reconciled + status "
            f"written after {total_s:.1f}s -> {n / total_s:.1f} objects/s; "
            f"operator CPU {cpu:.1f}s ({cpu / n * 1000:.0f} ms/object)"
        )
        print(f"operator RSS with {n} objects: {op.rss_mib():.0f} MiB")
        _, total_s, cpu = phase(
            lambda i: co.patch_namespaced_custom_object(
                GROUP, VERSION, ns, PLURAL, f"f{i:03d}", {"spec": {"batching": {"maxBatchSize": 8}}}
            ),
            2,
        )
        print(
            f"update {n} objects: all reconciled after {total_s:.1f}s -> "
            f"{n / total_s:.1f} objects/s; operator CPU {cpu:.1f}s"
        )
        cpu2 = cpu_seconds(pid)
        reconciles = scrape(op.metrics_port, "infleet_operator_reconcile_seconds_count")
        total = scrape(op.metrics_port, "infleet_operator_reconcile_seconds_sum")
        print(
            f"reconcile latency (apply of 5 children): mean {total / max(reconciles, 1) * 1000:.0f}"
            f" ms over {reconciles:.0f} reconciles"
        )
        time.sleep(30)
        cpu3 = cpu_seconds(pid)
        print(
            f"idle with {n} objects: operator CPU {(cpu3 - cpu2) / 30 * 100:.1f}% of a core; "
            f"RSS {op.rss_mib():.0f} MiB; status writes total "
            f"{scrape(op.metrics_port, 'infleet_operator_status_writes_total'):.0f}"
        )
    finally:
        if op is not None:
            op.stop()
        cluster.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
