"""Free ports and waiting: the helpers tests/, e2e/ and bench/ share.

Importable wherever the checkout's PYTHONPATH reaches: the Makefile exports
``e2e:bench:tests`` (no module edits ``sys.path``).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable
from typing import Any


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now (the caller binds it soon after)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for(
    fn: Callable[[], Any], timeout: float = 60, interval: float = 0.3, what: str = ""
) -> Any:
    """Call ``fn`` until it returns something truthy; raise TimeoutError with the last value."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        try:
            last = fn()
        except Exception as e:  # transient errors (API, connection refused)
            last = e
        if last and not isinstance(last, Exception):
            return last
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what or fn}: {last!r}")
        time.sleep(interval)
