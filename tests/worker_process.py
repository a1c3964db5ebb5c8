"""A real ``infleet-worker`` process (the pod layout: supervisor, engine core, front
ends) on free loopback ports, for the tests that need the processes themselves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

TESTS = Path(__file__).resolve().parent


class WorkerProcess:
    """``infleet-worker ARGS`` with ``PYTHONPATH=tests``; ports parsed from its log."""

    def __init__(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> None:
        path = os.pathsep.join(p for p in (str(TESTS), os.environ.get("PYTHONPATH", "")) if p)
        full_env = {**os.environ, "PYTHONPATH": path, **(env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "infleet_worker.cli", *args],
            env=full_env,
            stderr=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            text=True,
            cwd=cwd,
        )
        self.lines: list[str] = []
        self.ports: dict[str, int] = {}

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 60) -> dict[str, int]:
        """Until the ``ready`` event (ports known); then its log is pumped in a thread."""
        stderr = self.proc.stderr
        assert stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            line = stderr.readline()
            if not line:
                break
            self.lines.append(line)
            m = re.search(r"listening http=(\d+) grpc=(\d+) metrics=(\d+)", line)
            if m:
                names = ("http", "grpc", "metrics")
                self.ports = dict(zip(names, map(int, m.groups()), strict=True))
            if self.ports and "event=ready" in line:
                break
        assert self.ports, self.log()

        def pump() -> None:
            for more in stderr:
                self.lines.append(more)

        threading.Thread(target=pump, daemon=True).start()
        return self.ports

    def log(self) -> str:
        return "".join(self.lines)

    def children(self, marker: str) -> list[int]:
        """Child pids whose command line contains ``marker``."""
        tasks = Path(f"/proc/{self.pid}/task").glob("*/children")
        pids = sorted(int(c) for task in tasks for c in task.read_text().split())
        found = []
        for pid in pids:
            try:
                if marker.encode() in Path(f"/proc/{pid}/cmdline").read_bytes():
                    found.append(pid)
            except OSError:
                pass
        return found

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
