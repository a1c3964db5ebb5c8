"""kube_harness.nodeagent.supervise: init order, restartPolicy, back-off, probe kills,
with real processes (``sh -c``) standing in for containers."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kube_harness.nodeagent.containers import Container, mark_running, terminate
from kube_harness.nodeagent.probes import arm
from kube_harness.nodeagent.supervise import Supervisor


class Pod:
    """A Supervisor over ``sh -c`` containers; records what it starts and kills.

    Times are monotonic seconds, as a PodWorker passes them (never 0)."""

    def __init__(self, tmp: Path, *scripts: tuple[str, str], init: tuple[str, ...] = ()) -> None:
        self.started: list[str] = []
        self.killed: list[tuple[str, str]] = []
        self.probe_ok = True
        self.containers = [
            Container({"name": n, "script": s}, n in init, tmp / f"{n}.log") for n, s in scripts
        ]
        self.sup = Supervisor(
            self.containers,
            start=self._start,
            check=lambda c, spec: self.probe_ok,
            kill=self._kill,
            backoff_base=10,
            backoff_max=40,
            key="ns/p",
            pod_ref="p_ns(u)",
        )

    def _start(self, c: Container, now: float) -> None:
        c.proc = subprocess.Popen(["sh", "-c", c.spec["script"]], start_new_session=True)
        mark_running(c, now)
        arm(c, now)
        self.started.append(c.name)

    def _kill(self, c: Container, reason: str) -> None:
        self.killed.append((c.name, reason))
        c.killing_reason = reason
        terminate([c], 1)

    def __getitem__(self, name: str) -> Container:
        return next(c for c in self.containers if c.name == name)

    def settle(self, name: str) -> None:
        """Wait for container ``name``'s process to exit."""
        proc = self[name].proc
        assert proc is not None
        proc.wait(10)


@pytest.fixture
def pods(tmp_path: Path) -> Iterator[Any]:
    made: list[Pod] = []

    def make(*scripts: tuple[str, str], init: tuple[str, ...] = ()) -> Pod:
        made.append(Pod(tmp_path, *scripts, init=init))
        return made[-1]

    yield make
    for p in made:
        terminate(p.containers, 0)


def test_init_containers_run_in_order_before_the_main_one(pods: Any) -> None:
    p = pods(("a", "exit 0"), ("b", "exit 0"), ("main", "sleep 30"), init=("a", "b"))
    p.sup.tick(100.0, "Always")
    assert p.started == ["a"] and not p.sup.init_done
    p.settle("a")
    p.sup.tick(101.0, "Always")
    assert p.started == ["a", "b"]
    p.settle("b")
    p.sup.tick(102.0, "Always")
    assert p.started == ["a", "b", "main"] and p.sup.init_done
    assert p["main"].running() and p["main"].ready
    assert p["a"].state["terminated"]["reason"] == "Completed"


def test_failed_init_with_restart_never_finishes_the_pod(pods: Any) -> None:
    p = pods(("a", "exit 2"), ("main", "sleep 30"), init=("a",))
    p.sup.tick(100.0, "Never")
    p.settle("a")
    p.sup.tick(101.0, "Never")
    assert p.sup.terminal and not p.sup.init_done and p.started == ["a"]


def test_restart_never_and_always(pods: Any) -> None:
    never = pods(("main", "exit 3"))
    never.sup.tick(100.0, "Never")
    never.settle("main")
    never.sup.tick(101.0, "Never")
    assert never.sup.terminal and never.started == ["main"]
    assert never["main"].state["terminated"]["exitCode"] == 3

    always = pods(("main", "exit 0"))
    always.sup.tick(100.0, "Always")
    always.settle("main")
    always.sup.tick(101.0, "Always")
    assert always.started == ["main", "main"] and not always.sup.terminal


def test_on_failure_backs_off_then_succeeds(pods: Any) -> None:
    p = pods(("main", "exit 1"))
    p.sup.tick(100.0, "OnFailure")
    p.settle("main")
    p.sup.tick(101.0, "OnFailure")  # the first restart is immediate
    assert p.started == ["main", "main"] and p["main"].restart_count == 1
    p.settle("main")
    p.sup.tick(102.0, "OnFailure")  # the second waits 10 s
    assert p.started == ["main", "main"]
    assert p["main"].state["waiting"]["reason"] == "CrashLoopBackOff"
    assert "p_ns(u)" in p["main"].state["waiting"]["message"]
    p["main"].spec["script"] = "exit 0"
    p.sup.tick(112.0, "OnFailure")
    assert p.started == ["main"] * 3 and p["main"].restart_count == 2
    p.settle("main")
    p.sup.tick(113.0, "OnFailure")
    assert p.sup.terminal and p["main"].state["terminated"]["reason"] == "Completed"


def test_failed_liveness_probe_kills_and_restarts(pods: Any) -> None:
    p = pods(("main", "sleep 30"))
    p["main"].spec["livenessProbe"] = {"periodSeconds": 1, "failureThreshold": 2}
    p.sup.tick(100.0, "Always")
    p.probe_ok = False
    p.sup.tick(100.0, "Always")
    assert p.killed == []  # one failure of two
    p.sup.tick(101.0, "Always")
    assert p.killed == [("main", "Liveness probe failed")]
    p.sup.tick(102.0, "Always")
    term = p["main"].last_state["terminated"]
    assert term["message"] == "Liveness probe failed" and term["exitCode"] == 143
    assert p.started == ["main", "main"]
