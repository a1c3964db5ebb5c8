"""Small helpers for tests on the harness cluster."""

from __future__ import annotations

import contextlib
import http.server
import subprocess
import threading
import urllib.request
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from testkit import wait_for

__all__ = ["host_http_server", "http_get", "kubectl", "ok", "unique", "wait_for"]

if TYPE_CHECKING:
    from kube_harness.cluster import Cluster


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


def http_get(url: str, timeout: float = 2.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return str(r.read().decode())


@contextlib.contextmanager
def host_http_server(host: str, body: bytes = b"hello from the host\n") -> Iterator[str]:
    """An HTTP server on the host bound to ``host`` (e.g. cluster.gateway); yields its URL."""

    class H(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a: Any) -> None:
            pass

    srv = http.server.ThreadingHTTPServer((host, 0), H)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    try:
        yield f"http://{host}:{srv.server_address[1]}"
    finally:
        srv.shutdown()
        srv.server_close()


def kubectl(
    cluster: Cluster, *args: str, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The built kubectl against ``cluster``; check the result with :func:`ok`."""
    return subprocess.run(
        [str(cluster.kubectl), *args], env=cluster.env, text=True, capture_output=True, input=input
    )


def ok(r: subprocess.CompletedProcess[str]) -> str:
    assert r.returncode == 0, (
        f"{' '.join(map(str, r.args))} -> {r.returncode}\n{r.stdout}\n{r.stderr}"
    )
    return r.stdout
