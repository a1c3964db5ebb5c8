"""Server processes for the benchmarks: free loopback ports, readiness, stopping.

Shared by serving.py, triton_peer.py and cache.py (bench/ is on ``sys.path``: it
is the script's own directory, and ``make`` puts it on PYTHONPATH for tests).
``free_port`` is the shared one of e2e/testkit.py.
"""

from __future__ import annotations

import contextlib
import subprocess
import time
import urllib.request

from testkit import free_port

__all__ = ["free_port", "stop_process", "wait_http_ready"]


def wait_http_ready(
    port: int,
    proc: subprocess.Popen[bytes],
    timeout: float = 180.0,
    route: str = "/v2/health/ready",
) -> None:
    """Poll ``http://127.0.0.1:port{route}`` until 200; raise if ``proc`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with code {proc.returncode} before ready")
        url = f"http://127.0.0.1:{port}{route}"
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=2) as r:
            if r.status == 200:
                return
        time.sleep(0.3)
    raise TimeoutError(f"server not ready on port {port} after {timeout:.0f} s")


def stop_process(proc: subprocess.Popen[bytes], timeout: float = 20.0) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s."""
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
