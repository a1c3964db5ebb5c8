"""kube_harness.nodeagent.probes: thresholds, startup gating, and each handler kind."""

from __future__ import annotations

import http.server
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kube_harness.nodeagent.containers import Container
from kube_harness.nodeagent.probes import arm, check, port_of, run_due
from testkit import free_port


def container(**probes: Any) -> Container:
    spec = {"name": "main", "ports": [{"name": "http", "containerPort": 8000}]}
    spec.update({f"{k}Probe": v for k, v in probes.items()})
    return Container(spec, False, Path("/nonexistent/main.log"))


class Script:
    """A probe outcome per call, in order (True = success)."""

    def __init__(self, *results: bool) -> None:
        self.results = list(results)
        self.calls: list[str] = []

    def __call__(self, c: Container, spec: dict[str, Any]) -> bool:
        self.calls.append(spec["id"])
        return self.results.pop(0)


def test_arm_without_probes_is_started_and_ready() -> None:
    c = container()
    arm(c, 0.0)
    assert c.started and c.ready and not c.probes
    init = Container({"name": "init"}, True, Path("/x"))
    arm(init, 0.0)
    assert init.started and not init.ready  # init containers never report ready


def test_readiness_thresholds() -> None:
    c = container(
        readiness={"id": "r", "periodSeconds": 1, "failureThreshold": 2, "successThreshold": 2}
    )
    arm(c, 0.0)
    assert c.started and not c.ready
    probe = Script(True, True, False, False)
    for t in (0.0, 0.5):  # 0.5: not due yet
        assert run_due(c, t, probe) is None
    assert probe.calls == ["r"] and not c.ready  # one success of two
    run_due(c, 1.0, probe)
    assert c.ready
    run_due(c, 2.0, probe)
    assert c.ready  # one failure of two
    run_due(c, 3.0, probe)
    assert not c.ready


def test_startup_gates_the_others_then_liveness_kills() -> None:
    c = container(
        startup={"id": "s", "initialDelaySeconds": 5, "periodSeconds": 1},
        liveness={"id": "l", "periodSeconds": 1, "failureThreshold": 1},
        readiness={"id": "r", "periodSeconds": 1},
    )
    arm(c, 0.0)
    assert not c.started and not c.ready
    probe = Script(True, True, True, False)
    assert run_due(c, 1.0, probe) is None and probe.calls == []  # initial delay
    run_due(c, 5.0, probe)  # startup succeeds: liveness and readiness run at once
    assert probe.calls == ["s", "l", "r"] and c.started and c.ready
    assert run_due(c, 6.0, probe) == "Liveness probe failed"


def test_failed_startup_kills() -> None:
    c = container(startup={"id": "s", "periodSeconds": 1, "failureThreshold": 2})
    arm(c, 0.0)
    probe = Script(False, False)
    assert run_due(c, 0.0, probe) is None
    assert run_due(c, 1.0, probe) == "Startup probe failed"


def test_named_and_numeric_ports() -> None:
    spec = {"ports": [{"name": "http", "containerPort": 8000}]}
    assert port_of(spec, "http") == 8000
    assert port_of(spec, 9000) == port_of(spec, "9000") == 9000
    with pytest.raises(OSError, match="unknown named port"):
        port_of(spec, "grpc")


@pytest.fixture
def http_server() -> Iterator[int]:
    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200 if self.path == "/ok" else 503)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield int(srv.server_address[1])
    srv.shutdown()
    srv.server_close()


def test_http_and_tcp_handlers(http_server: int, tmp_path: Path) -> None:
    c = Container({"name": "main", "ports": [{"name": "web", "containerPort": http_server}]},
                  False, tmp_path / "log")  # fmt: skip
    ip = "127.0.0.1"
    assert check(c, {"httpGet": {"path": "/ok", "port": "web"}}, ip, tmp_path)
    assert not check(c, {"httpGet": {"path": "/bad", "port": http_server}}, ip, tmp_path)
    assert check(c, {"tcpSocket": {"port": http_server}}, ip, tmp_path)
    closed = free_port()  # a port nobody listens on
    assert not check(c, {"tcpSocket": {"port": closed}}, ip, tmp_path)
    assert not check(c, {"exec": {"command": ["true"]}}, ip, tmp_path)  # no process: fails
