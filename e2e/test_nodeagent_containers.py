"""kube_harness.nodeagent.containers: images, command lines, exits and restart back-off."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from kube_harness.nodeagent.containers import (
    Container,
    ImageMap,
    command_line,
    crash_loop,
    image_error,
    map_image,
    reap,
    resolve_exe,
    terminate,
)


@pytest.mark.parametrize(
    ("image", "entrypoint", "cmd"),
    [
        ("ghcr.io/acme/infleet-worker:0.1.0", ["infleet-worker"], []),
        ("infleet/worker", ["infleet-worker"], []),
        ("localhost:5000/infleet/operator:dev", ["infleet-operator"], []),
        ("infleet-operator@sha256:abc", ["infleet-operator"], []),
        ("python:3.11", [], ["python3"]),
        ("python", [], ["python3"]),
        ("docker.io/library/python:3.11-slim", [], ["python3"]),
    ],
)
def test_map_image(image: str, entrypoint: list[str], cmd: list[str]) -> None:
    m = map_image(image)
    assert m is not None
    assert (m.entrypoint, m.cmd) == (entrypoint, cmd)


@pytest.mark.parametrize("image", ["nginx:1.27", "registry.example/unknown:1.0", "pythonista"])
def test_unmapped_images(image: str) -> None:
    assert map_image(image) is None


def test_image_error_turns_into_back_off() -> None:
    assert image_error("nginx", 100.0, 101.0)["waiting"]["reason"] == "ErrImagePull"
    late = image_error("nginx", 100.0, 106.0)["waiting"]
    assert late["reason"] == "ImagePullBackOff" and '"nginx"' in late["message"]


def test_python_resolves_to_the_venv(tmp_path: Path) -> None:
    venv = tmp_path
    assert resolve_exe("python3", venv) == str(venv / "bin" / "python")
    assert resolve_exe("/usr/local/bin/python3.11", venv) == str(venv / "bin" / "python")
    assert resolve_exe("/bin/sh", venv) == "/bin/sh"
    (venv / "bin").mkdir()
    (venv / "bin" / "tool").touch()
    assert resolve_exe("tool", venv) == str(venv / "bin" / "tool")
    assert resolve_exe("sh", venv).endswith("/sh")


def test_command_line_like_a_runtime() -> None:
    image = ImageMap(["entry"], ["default"])
    assert command_line({}, image) == ["entry", "default"]
    assert command_line({"args": ["x"]}, image) == ["entry", "x"]
    assert command_line({"args": []}, image) == ["entry"]
    assert command_line({"command": ["c"], "args": ["a"]}, image) == ["c", "a"]


def _exited(tmp_path: Path, script: str) -> Container:
    c = Container({"name": "main"}, False, tmp_path / "main.log")
    c.proc = subprocess.Popen(["sh", "-c", script])
    c.proc.wait()
    c.state = {"running": {"startedAt": "2026-01-01T00:00:00Z"}}
    return c


def test_reap_records_the_exit_and_backs_off(tmp_path: Path) -> None:
    c = _exited(tmp_path, "exit 3")
    c.started_mono = 1000.0
    assert reap(c, 1001.0, backoff_base=10, backoff_max=25) == 3
    term = c.state["terminated"]
    assert (term["exitCode"], term["reason"]) == (3, "Error")
    assert term["startedAt"] == "2026-01-01T00:00:00Z" and c.last_state == c.state
    assert c.proc is None and not c.ready
    assert c.next_start == 1001.0  # the first restart is immediate
    assert crash_loop(c, "p_ns(uid)") is not None
    delays = []
    for _ in range(4):
        c.proc = subprocess.Popen(["true"])
        c.proc.wait()
        reap(c, 1002.0, backoff_base=10, backoff_max=25)
        delays.append(c.next_start - 1002.0)
    assert delays == [10, 20, 25, 25]
    c.proc = subprocess.Popen(["true"])
    c.proc.wait()
    reap(c, 2000.0, backoff_base=10, backoff_max=25)  # ran for > 10 min: back-off resets
    assert c.next_start == 2000.0
    assert c.state["terminated"]["reason"] == "Completed"


def test_reap_of_a_signalled_process(tmp_path: Path) -> None:
    c = _exited(tmp_path, "kill -9 $$")
    c.killing_reason = "Liveness probe failed"
    assert reap(c, 1.0, 10, 300) == 137
    term = c.state["terminated"]
    assert term["reason"] == "Error" and term["message"] == "Liveness probe failed"
    assert c.killing_reason == ""


def test_reap_of_a_running_process_does_nothing(tmp_path: Path) -> None:
    c = Container({"name": "main"}, False, tmp_path / "main.log")
    c.proc = subprocess.Popen(["sleep", "5"])
    try:
        assert reap(c, 1.0, 10, 300) is None and c.proc is not None
    finally:
        c.proc.kill()
        c.proc.wait()


def test_terminate_sigterm_then_sigkill(tmp_path: Path) -> None:
    polite = Container({"name": "a"}, False, tmp_path / "a.log")
    stubborn = Container({"name": "b"}, False, tmp_path / "b.log")
    polite.proc = subprocess.Popen(["sleep", "30"], start_new_session=True)
    stubborn.proc = subprocess.Popen(
        ["sh", "-c", "trap '' TERM; while :; do sleep 0.1; done"], start_new_session=True
    )
    time.sleep(0.2)  # let the shell install its trap
    t0 = time.monotonic()
    terminate([polite, stubborn], grace=1.0)
    assert 0.9 < time.monotonic() - t0 < 5
    assert polite.proc.returncode == -15
    assert stubborn.proc.returncode == -9
