"""pytest plugin: real redis-server processes on free loopback ports.

Registered from tests/conftest.py (``pytest_plugins = [..., "redis_fixtures"]``).

Fixtures
- ``redis_server``          function scope: a private server; stop/kill/restart it freely.
- ``redis_server_session``  session scope: one shared server; never stop it.
- ``redis_url``             function scope: URL of the shared server, FLUSHALLed first.

Each yields (or for ``redis_url`` uses) a :class:`RedisServer`: ``.url``, ``.port``,
``.stop()``, ``.kill()`` (SIGKILL, for outage tests), ``.pause()`` / ``.resume()``
(SIGSTOP/SIGCONT: a hung Redis), ``.start()`` / ``.restart()`` (same port),
``.flushall()``, ``.client()`` (a sync redis.Redis). ``RedisServer(dir, password=...,
tls=True)`` makes AUTH and TLS servers (TLS: a self-signed certificate, URL
``rediss://...?ssl_ca_certs=<ca.pem>``). Servers bind
127.0.0.1 only, keep nothing on disk (``--save "" --appendonly no``), and
work in a temporary directory. Needs /usr/bin/redis-server (or $REDIS_SERVER).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from testkit import free_port


def redis_server_binary() -> str | None:
    return (
        os.environ.get("REDIS_SERVER")
        or shutil.which("redis-server")
        or ("/usr/bin/redis-server" if Path("/usr/bin/redis-server").exists() else None)
    )


class RedisServer:
    """One redis-server child process on 127.0.0.1:<port>."""

    def __init__(
        self,
        workdir: Path,
        *,
        port: int | None = None,
        password: str | None = None,
        tls: bool = False,
    ) -> None:
        binary = redis_server_binary()
        if binary is None:
            pytest.skip("redis-server not installed")
        self.binary = binary
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = port or free_port()
        self._may_move = port is None  # until the first successful start
        self.password = password
        self.tls = tls
        self.ca_file = self.workdir / "tls" / "ca.pem"
        if tls:
            self._make_certificate()
        self.proc: subprocess.Popen[bytes] | None = None

    def _make_certificate(self) -> None:
        """A self-signed certificate for 127.0.0.1 (it is its own CA)."""
        tls_dir = self.ca_file.parent
        tls_dir.mkdir(exist_ok=True)
        openssl = shutil.which("openssl")
        if openssl is None:
            pytest.skip("openssl not installed")
        subprocess.run(
            [
                openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                "-keyout", str(tls_dir / "key.pem"), "-out", str(self.ca_file),
                "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
            ],
            check=True,
            capture_output=True,
        )  # fmt: skip

    @property
    def url(self) -> str:
        """redis://[:password@]127.0.0.1:port/0, or rediss://...?ssl_ca_certs=... with TLS."""
        auth = f":{self.password}@" if self.password else ""
        if self.tls:
            return f"rediss://{auth}127.0.0.1:{self.port}/0?ssl_ca_certs={self.ca_file}"
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _args(self) -> list[str]:
        args = [
            self.binary,
            "--port", "0" if self.tls else str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.workdir),
            "--save", "",
            "--appendonly", "no",
            "--daemonize", "no",
            "--logfile", str(self.workdir / "redis.log"),
        ]  # fmt: skip
        if self.password:
            args += ["--requirepass", self.password]
        if self.tls:
            tls_dir = self.ca_file.parent
            args += [
                "--tls-port", str(self.port),
                "--tls-cert-file", str(self.ca_file),
                "--tls-key-file", str(tls_dir / "key.pem"),
                "--tls-ca-cert-file", str(self.ca_file),
                "--tls-auth-clients", "no",
            ]  # fmt: skip
        return args

    def start(self, timeout_s: float = 10.0) -> RedisServer:
        """Start (again) on the same port; waits until it answers PING."""
        if self.running:
            return self
        for attempt in range(5):
            self.proc = subprocess.Popen(
                self._args(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            if self._wait_ready(timeout_s):
                self._may_move = False
                return self
            self.stop()
            if self._may_move:  # the free port was taken in between: pick another
                self.port = free_port()
            else:
                time.sleep(0.2 * (attempt + 1))
        raise RuntimeError(f"redis-server did not start on 127.0.0.1:{self.port}")

    def _wait_ready(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with self.client(socket_timeout=0.5) as c:
                    if c.ping():
                        return True
            except redis.RedisError:
                pass
            time.sleep(0.02)
        return False

    def client(self, **kwargs: object) -> redis.Redis:
        return redis.Redis.from_url(self.url, **kwargs)

    def flushall(self) -> None:
        with self.client() as c:
            c.flushall()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Graceful stop (SIGTERM); the port is free afterwards."""
        self._signal(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """Abrupt death (SIGKILL), as a crashed or partitioned Redis looks to clients."""
        self._signal(signal.SIGKILL, 5.0)

    def _signal(self, sig: signal.Signals, timeout_s: float) -> None:
        proc, self.proc = self.proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGCONT)  # a paused server must be able to act on SIGTERM
        proc.send_signal(sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def pause(self) -> None:
        """SIGSTOP: the port still accepts connections but nothing answers (a hung Redis)."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after :meth:`pause`."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGCONT)

    def restart(self) -> RedisServer:
        self.stop()
        return self.start()

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server for this test (may be stopped, killed, restarted)."""
    with (
        tempfile.TemporaryDirectory(prefix="infleet-redis-") as tmp,
        RedisServer(Path(tmp)) as server,
    ):
        yield server


@pytest.fixture(scope="session")
def redis_server_session() -> Iterator[RedisServer]:
    """One redis-server shared by the whole session. Do not stop it; FLUSHALL is fine."""
    with (
        tempfile.TemporaryDirectory(prefix="infleet-redis-") as tmp,
        RedisServer(Path(tmp)) as server,
    ):
        yield server


@pytest.fixture
def redis_url(redis_server_session: RedisServer) -> str:
    """URL of the shared server, emptied for this test."""
    if not redis_server_session.running:
        redis_server_session.start()
    redis_server_session.flushall()
    return redis_server_session.url
