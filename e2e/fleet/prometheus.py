"""A real Prometheus (Debian's ``prometheus`` package) for the e2e fleet.

It scrapes every 1 s: the worker pods of a namespace, found by file service discovery
(``PodTargets`` writes their IPs and names from the API server, as Kubernetes SD would,
with the ``namespace`` and ``pod`` labels a ServiceMonitor keeps), and the operator's
own /metrics, and evaluates the chart's alerting rules. It can be stopped and started
again on the same port and storage, to make a scrape gap.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from kubernetes import client

from testkit import free_port

RULES = Path(__file__).resolve().parents[2] / "charts/infleet/files/alerts/infleet-rules.yaml"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


class PrometheusServer:
    def __init__(self, workdir: Path, operator_metrics_port: int) -> None:
        self.dir = workdir
        self.port = free_port()
        self.targets = workdir / "workers.json"
        self.targets.write_text("[]")
        self.config = workdir / "prometheus.yml"
        doc = {
            "global": {
                "scrape_interval": "1s",
                "scrape_timeout": "900ms",
                "evaluation_interval": "1s",
            },
            "rule_files": [str(RULES)],  # the chart's alerts: Prometheus refuses bad ones
            "scrape_configs": [
                {
                    "job_name": "infleet-workers",
                    "file_sd_configs": [{"files": [str(self.targets)], "refresh_interval": "1s"}],
                },
                {
                    "job_name": "infleet-operator",
                    "static_configs": [{"targets": [f"127.0.0.1:{operator_metrics_port}"]}],
                },
            ],
        }
        self.config.write_text(yaml.safe_dump(doc))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30) -> PrometheusServer:
        binary = prometheus_binary()
        assert binary, "prometheus is not installed (scripts/bootstrap.sh installs it)"
        with (self.dir / "prometheus.log").open("ab") as log:
            self.proc = subprocess.Popen(
                [
                    binary,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.dir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, (self.dir / "prometheus.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"prometheus not ready in {timeout}s")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def query(self, promql: str) -> list[dict[str, Any]]:
        """An instant query's result vector; raises with Prometheus' error text."""
        url = f"{self.url}/api/v1/query?" + urllib.parse.urlencode({"query": promql})
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                doc = json.loads(r.read())
        except urllib.error.HTTPError as e:
            doc = json.loads(e.read())
        if doc.get("status") != "success":
            raise ValueError(f"{promql}: {doc.get('errorType')}: {doc.get('error')}")
        result: list[dict[str, Any]] = doc["data"]["result"]
        return result

    def targets_health(self) -> list[tuple[str, str, str]]:
        """(scrape URL, health, last error) of every active target."""
        with urllib.request.urlopen(f"{self.url}/api/v1/targets", timeout=10) as r:
            doc = json.loads(r.read())
        return [
            (t["scrapeUrl"], t["health"], t.get("lastError", ""))
            for t in doc["data"]["activeTargets"]
        ]

    def rule_health(self) -> dict[str, str]:
        """Alerting rule name -> health ("ok" once evaluated without error)."""
        with urllib.request.urlopen(f"{self.url}/api/v1/rules", timeout=10) as r:
            doc = json.loads(r.read())
        return {
            rule["name"]: rule["health"]
            for group in doc["data"]["groups"]
            for rule in group["rules"]
        }


class PodTargets:
    """Writes the Running pods of a namespace (label selector) as file-SD targets."""

    def __init__(
        self, api_client: Any, namespace: str, selector: str, port: int, path: Path
    ) -> None:
        self.core = client.CoreV1Api(api_client)
        self.namespace, self.selector, self.port, self.path = namespace, selector, port, path
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pod-targets", daemon=True)

    def write(self) -> list[dict[str, Any]]:
        pods = self.core.list_namespaced_pod(self.namespace, label_selector=self.selector)
        groups = []
        for p in pods.items:
            st, md = p.status, p.metadata
            if st is not None and md is not None and st.pod_ip and st.phase == "Running":
                labels = {"namespace": self.namespace, "pod": md.name}
                groups.append({"targets": [f"{st.pod_ip}:{self.port}"], "labels": labels})
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(groups))
        os.replace(tmp, self.path)  # atomic: Prometheus never reads half a file
        return groups

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            try:
                self.write()
            except Exception:
                continue

    def start(self) -> PodTargets:
        self.write()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(5)
