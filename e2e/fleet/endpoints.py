"""Follow a Service's Ready endpoints the way kube-proxy would: from its EndpointSlices.

Nothing routes Service ClusterIPs on this machine, so clients pick a Ready
address themselves; a terminating pod leaves the list as soon as its endpoint
turns not-ready, which is what makes scale-down lossless.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client


def ready_addresses(slices: list[Any]) -> list[str]:
    out: list[str] = []
    for sl in slices:
        for ep in sl.endpoints or []:
            cond = ep.conditions
            if cond is not None and cond.ready is False:
                continue
            if cond is not None and cond.terminating:
                continue
            out.extend(ep.addresses or [])
    return sorted(set(out))


class EndpointWatcher:
    """Polls EndpointSlices of one Service in a background thread."""

    def __init__(
        self, api_client: Any, namespace: str, service: str, interval: float = 0.5
    ) -> None:
        self._api = client.DiscoveryV1Api(api_client)
        self._namespace = namespace
        self._service = service
        self._interval = interval
        self._lock = threading.Lock()
        self._addresses: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"endpoints-{service}", daemon=True)

    def start(self) -> EndpointWatcher:
        self.refresh()
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def refresh(self) -> list[str]:
        slices = self._api.list_namespaced_endpoint_slice(
            self._namespace, label_selector=f"kubernetes.io/service-name={self._service}"
        ).items
        addresses = ready_addresses(slices)
        with self._lock:
            self._addresses = addresses
        return addresses

    @property
    def addresses(self) -> list[str]:
        with self._lock:
            return list(self._addresses)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                self.refresh()
            except Exception:  # the API server restarting; keep the last list
                continue


class EndpointFollower:
    """Sends requests round-robin to the Ready pods of a Service, following EndpointSlices.

    ``send(ip) -> None`` makes one request (raises on failure). Runs until stopped or
    ``max_seconds``; records successes, failures (with the error) and the IPs used.
    """

    def __init__(
        self,
        api_client: Any,
        namespace: str,
        service: str,
        send: Callable[[str], None],
        poll: float = 0.1,
        max_seconds: float = 300,
    ) -> None:
        self.watcher = EndpointWatcher(api_client, namespace, service, interval=poll)
        self.namespace, self.service, self.send = namespace, service, send
        self.poll, self.max_seconds = poll, max_seconds
        self.ok = 0
        self.failures: list[tuple[str, str]] = []
        self.seen: set[str] = set()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    @property
    def addresses(self) -> list[str]:
        return self.watcher.addresses

    def _traffic(self) -> None:
        t0 = time.monotonic()
        rr = itertools.count()
        while not self._stop.is_set() and time.monotonic() - t0 < self.max_seconds:
            addrs = self.addresses
            if not addrs:
                time.sleep(0.05)
                continue
            ip = addrs[next(rr) % len(addrs)]
            try:
                self.send(ip)
                self.ok += 1
                self.seen.add(ip)
            except Exception as e:
                self.failures.append((ip, repr(e)[:300]))
            time.sleep(0.02)

    def start(self, clients: int = 2) -> EndpointFollower:
        self.watcher.start()
        self._threads = [
            threading.Thread(target=self._traffic, daemon=True) for _ in range(clients)
        ]
        for t in self._threads:
            t.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)
        self.watcher.stop()
