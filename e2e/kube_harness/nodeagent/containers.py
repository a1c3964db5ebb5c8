"""Containers as local processes: image mapping, launch, signals, exit and back-off."""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from kube_harness.nodeagent.host import DEFAULT_PATH, Obj, now_iso


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


def command_line(spec: Obj, image: ImageMap) -> list[str]:
    """argv before ``$(VAR)`` expansion: command+args, else the image's entrypoint+cmd."""
    command = spec.get("command")
    args = spec.get("args")
    if command:
        return list(command) + list(args or [])
    return image.entrypoint + (list(args) if args is not None else image.cmd)


def image_error(image: str, since: float, now: float) -> Obj:
    reason = "ErrImagePull" if now - since < 5 else "ImagePullBackOff"
    msg = (
        f'image "{image}" is not mapped to a local installation by the infleet node '
        "agent (see e2e/README.md)"
    )
    return {"waiting": {"reason": reason, "message": msg}}


# ---------------------------------------------------------------------------- state
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


# ---------------------------------------------------------------------------- processes
def launch(
    c: Container, argv: list[str], env: dict[str, str], netns: str | None, script: Path, now: float
) -> bool:
    """Start ``argv`` in its own mount+UTS namespace (in ``netns``) via the mount ``script``."""
    c.log_file.parent.mkdir(parents=True, exist_ok=True)
    launcher: list[str] = []
    if netns:
        launcher = ["ip", "netns", "exec", netns]
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
            return False
    mark_running(c, now)
    return True


def mark_running(c: Container, now: float) -> None:
    """``c.proc`` was just started (a restart if it ran before)."""
    if c.started_mono:
        c.restart_count += 1
    c.started_mono = now
    c.state = {"running": {"startedAt": now_iso()}}


def exec_in(c: Container, cmd: list[str], timeout: float, venv: Path) -> int:
    """Run ``cmd`` in the namespaces of ``c``'s process (exec probes, preStop hooks)."""
    if c.proc is None:
        return 1
    argv = ["nsenter", "-t", str(c.proc.pid), "-m", "-u", "-n", "--", *cmd]
    env = {"PATH": f"{venv}/bin:{DEFAULT_PATH}"}
    return subprocess.run(argv, capture_output=True, timeout=timeout, env=env).returncode


def terminate(cs: list[Container], grace: float) -> None:
    """SIGTERM to each running process group; SIGKILL what is left after ``grace``."""
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


def reap(c: Container, now: float, backoff_base: float, backoff_max: float) -> int | None:
    """Record an exited process as ``terminated`` and schedule the restart; its exit code."""
    assert c.proc is not None
    code = c.proc.returncode
    if code is None:
        return None
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
    # back-off: immediate first restart, then base, 2*base, ... (reset after 10 min up)
    ran = now - c.started_mono
    if ran > 600:
        c.backoff = 0.0
    delay = c.backoff
    c.backoff = backoff_base if c.backoff == 0 else min(c.backoff * 2, backoff_max)
    c.next_start = now + delay
    return code


def crash_loop(c: Container, pod: str) -> Obj | None:
    """The ``CrashLoopBackOff`` waiting state while a crashed container waits to restart."""
    crashed = "terminated" in c.state or c.state.get("waiting", {}).get("reason") == (
        "CrashLoopBackOff"
    )
    if not crashed:
        return None
    return {
        "waiting": {
            "reason": "CrashLoopBackOff",
            "message": f"back-off {c.backoff / 2 if c.backoff else 0:.0f}s restarting "
            f"failed container={c.name} pod={pod}",
        }
    }
