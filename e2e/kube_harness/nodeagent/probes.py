"""Probes (startup, readiness, liveness) and preStop hooks: the same handler kinds.

:func:`arm` sets a started container's probes up, :func:`run_due` runs the due
ones and updates ``started``/``ready`` from their thresholds; it returns why the
container must be killed, if it must. :func:`check` runs one handler
(httpGet, tcpSocket, exec; grpc counts as passing).
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kube_harness.nodeagent.containers import Container, Probe, exec_in
from kube_harness.nodeagent.host import Obj, log

KINDS = ("startup", "readiness", "liveness")

Check = Callable[[Container, Obj], bool]


def arm(c: Container, now: float) -> None:
    """A container just started: its probes from the spec; started/ready as they imply."""
    spec = c.spec
    c.probes = {}
    for k in KINDS:
        p = spec.get(f"{k}Probe")
        if p:
            c.probes[k] = Probe(p, k, next_at=now + float(p.get("initialDelaySeconds", 0)))
    c.started = "startup" not in c.probes
    c.ready = not c.init and "readiness" not in c.probes and c.started


def run_due(c: Container, now: float, check: Check) -> str | None:
    """Run the probes of ``c`` that are due; the reason to kill it, or None."""
    for kind in ("startup", "liveness", "readiness"):
        p = c.probes.get(kind)
        if p is None or now < p.next_at:
            continue
        if kind != "startup" and not c.started:
            continue
        if kind == "startup" and c.started:
            continue
        p.next_at = now + float(p.spec.get("periodSeconds", 10))
        ok = check(c, p.spec)
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
                return "Startup probe failed"
        elif kind == "readiness":
            if ok and p.successes >= succ_thr:
                c.ready = True
            elif not ok and p.failures >= fail_thr:
                c.ready = False
        elif kind == "liveness" and not ok and p.failures >= fail_thr:
            return "Liveness probe failed"
    return None


def check(c: Container, spec: Obj, pod_ip: str | None, venv: Path) -> bool:
    """Run one handler (a probe's, or a preStop hook's httpGet/exec) against ``c``."""
    timeout = float(spec.get("timeoutSeconds", 1))
    try:
        if "httpGet" in spec:
            hg = spec["httpGet"]
            port = port_of(c.spec, hg["port"])
            host = hg.get("host") or pod_ip or "127.0.0.1"
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
            port = port_of(c.spec, spec["tcpSocket"]["port"])
            host = spec["tcpSocket"].get("host") or pod_ip or "127.0.0.1"
            with socket.create_connection((host, port), timeout=timeout):
                return True
        if "exec" in spec:
            return exec_in(c, spec["exec"]["command"], timeout, venv) == 0
        return True  # grpc probes: not implemented, treated as passing
    except (OSError, http.client.HTTPException, subprocess.TimeoutExpired):
        return False


def port_of(container: Obj, port: Any) -> int:
    """A probe's port: a number, or the name of one of the container's ports."""
    if isinstance(port, int) or str(port).isdigit():
        return int(port)
    for p in container.get("ports") or []:
        if p.get("name") == port:
            return int(p["containerPort"])
    raise OSError(f"unknown named port {port}")


def pre_stop(c: Container, grace: float, pod_ip: str | None, venv: Path, key: str) -> None:
    """Run ``c``'s preStop hook (sleep, exec, httpGet), bounded by the grace period."""
    hook = (c.spec.get("lifecycle") or {}).get("preStop")
    if not hook:
        return
    try:
        if "sleep" in hook:
            time.sleep(min(float(hook["sleep"].get("seconds", 0)), grace))
        elif "exec" in hook:
            exec_in(c, hook["exec"]["command"], grace, venv)
        elif "httpGet" in hook:
            check(c, {"httpGet": hook["httpGet"], "timeoutSeconds": grace}, pod_ip, venv)
    except Exception as e:
        log.info("preStop hook of %s/%s failed: %s", key, c.name, e)
