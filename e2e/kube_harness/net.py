"""Bridge + per-pod network namespaces for the test cluster.

Every cluster instance owns slot ``i`` (0..15): a Linux bridge ``infleet<i>``
with gateway ``10.211.<16*i>.1/20``; pods get netns ``infleet<i>-<id>`` with a
veth pair (host side ``inf<i>v<id>`` on the bridge, pod side ``eth0``) and an
address from that /20, default route via the gateway. Traffic only ever goes
to addresses in these namespaces and to the gateway (a local address): nothing
is routed off the machine, there is no NAT.

The bridge carries an alias ``infleet owner=<pid> run=<dir>``; a slot whose
owner is dead is reclaimed (stale netns/veths removed) by the next cluster.
"""

from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

POD_SUPERNET = ipaddress.IPv4Network("10.211.0.0/16")
SLOTS = 16
SERVICE_CIDR = "10.212.0.0/16"
_OWNED: set[int] = set()  # slots held by clusters of this process


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], check=check, text=True, capture_output=True)


def link_exists(name: str) -> bool:
    return ip("link", "show", "dev", name, check=False).returncode == 0


def list_netns() -> list[str]:
    out = ip("netns", "list", check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def netns_pids(ns: str) -> list[int]:
    out = ip("netns", "pids", ns, check=False).stdout
    return [int(x) for x in out.split() if x.isdigit()]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _bridge_owner(bridge: str) -> int | None:
    out = ip("-d", "link", "show", "dev", bridge, check=False).stdout
    m = re.search(r"alias infleet owner=(\d+)", out)
    return int(m.group(1)) if m else None


def kill_netns(ns: str) -> None:
    """SIGKILL everything inside ``ns`` and delete it."""
    for _ in range(50):
        pids = netns_pids(ns)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.05)
    ip("netns", "del", ns, check=False)


def cleanup_slot(slot: int) -> None:
    """Remove every netns, veth and the bridge belonging to ``slot``."""
    for ns in list_netns():
        if ns.startswith(f"infleet{slot}-"):
            kill_netns(ns)
    out = ip("-o", "link", "show", check=False).stdout
    for m in re.finditer(rf"^\d+:\s+(inf{slot}v[0-9a-f]+)[@:]", out, re.M):
        ip("link", "del", m.group(1), check=False)
    if link_exists(f"infleet{slot}"):
        ip("link", "del", f"infleet{slot}", check=False)


def ensure_blackholes() -> None:
    """Unreachable routes for the pod supernet and the service CIDR.

    Live bridges' /20 routes are more specific and win; anything else in those
    ranges (a finished cluster's pod IP, a ClusterIP) fails locally instead of
    following the default route off the machine.
    """
    for cidr in (str(POD_SUPERNET), SERVICE_CIDR):
        ip("route", "replace", "blackhole", cidr, check=False)


def remove_blackholes_if_unused() -> None:
    if any(link_exists(f"infleet{i}") for i in range(SLOTS)):
        return
    for cidr in (str(POD_SUPERNET), SERVICE_CIDR):
        ip("route", "del", "blackhole", cidr, check=False)


def leftovers() -> dict[str, list[str]]:
    """Every infleet netns/link on the machine (for the teardown test)."""
    links = re.findall(
        r"^\d+:\s+((?:infleet\d+|inf\d+v[0-9a-f]+))[@:]", ip("-o", "link").stdout, re.M
    )
    routes = [
        line
        for line in ip("route", "show", "type", "blackhole").stdout.splitlines()
        if line.split()[1] in (str(POD_SUPERNET), SERVICE_CIDR)
    ]
    return {
        "netns": [n for n in list_netns() if n.startswith("infleet")],
        "links": links,
        "routes": routes,
    }


@dataclass
class Network:
    slot: int
    run_dir: Path
    subnet: ipaddress.IPv4Network = field(init=False)
    gateway: str = field(init=False)
    bridge: str = field(init=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _used: set[str] = field(default_factory=set, repr=False)

    def __post_init__(self) -> None:
        self.subnet = list(POD_SUPERNET.subnets(new_prefix=20))[self.slot]
        self.gateway = str(self.subnet.network_address + 1)
        self.bridge = f"infleet{self.slot}"

    @classmethod
    def create(cls, run_dir: Path) -> Network:
        """Claim the first free slot (reclaiming dead owners' slots) and make its bridge."""
        for slot in range(SLOTS):
            br = f"infleet{slot}"
            if link_exists(br):
                owner = _bridge_owner(br)
                if owner is None and slot not in _OWNED:
                    time.sleep(0.5)  # another cluster may be between `link add` and its alias
                    owner = _bridge_owner(br)
                if slot in _OWNED or (owner is not None and _pid_alive(owner)):
                    continue
                cleanup_slot(slot)
            else:
                # a crashed run may have left netns without a bridge
                cleanup_slot(slot)
            net = cls(slot, run_dir)
            try:
                net._make_bridge()
            except subprocess.CalledProcessError:
                if link_exists(br):  # raced with another cluster starting
                    continue
                raise
            _OWNED.add(slot)
            return net
        raise RuntimeError("all 16 infleet network slots are in use (`make cluster-down`?)")

    def _make_bridge(self) -> None:
        ensure_blackholes()
        ip("link", "add", self.bridge, "type", "bridge")
        ip(
            "link",
            "set",
            "dev",
            self.bridge,
            "alias",
            f"infleet owner={os.getpid()} run={self.run_dir}",
        )
        ip("addr", "add", f"{self.gateway}/{self.subnet.prefixlen}", "dev", self.bridge)
        ip("link", "set", "dev", self.bridge, "up")

    def allocate_ip(self) -> str:
        with self._lock:
            for host in self.subnet.hosts():
                a = str(host)
                if a == self.gateway or a in self._used:
                    continue
                if int(host) - int(self.subnet.network_address) < 10:
                    continue  # keep .1-.9 for the host side
                self._used.add(a)
                return a
        raise RuntimeError(f"pod CIDR {self.subnet} exhausted")

    def release_ip(self, addr: str) -> None:
        with self._lock:
            self._used.discard(addr)

    def netns_name(self, pod_id: str) -> str:
        return f"infleet{self.slot}-{pod_id}"

    def add_pod(self, pod_id: str) -> tuple[str, str]:
        """Create netns + veth for a pod; returns (netns name, pod IP)."""
        ns = self.netns_name(pod_id)
        host_if = f"inf{self.slot}v{pod_id[:8]}"
        tmp_if = f"inf{self.slot}p{pod_id[:8]}"
        addr = self.allocate_ip()
        try:
            ip("netns", "add", ns)
            ip("link", "add", host_if, "type", "veth", "peer", "name", tmp_if)
            ip("link", "set", tmp_if, "netns", ns)
            ip("link", "set", host_if, "master", self.bridge, "up")
            ip("-n", ns, "link", "set", tmp_if, "name", "eth0")
            ip("-n", ns, "addr", "add", f"{addr}/{self.subnet.prefixlen}", "dev", "eth0")
            ip("-n", ns, "link", "set", "eth0", "up")
            ip("-n", ns, "link", "set", "lo", "up")
            ip("-n", ns, "route", "add", "default", "via", self.gateway)
        except subprocess.CalledProcessError as e:
            self.remove_pod(pod_id, addr)
            raise RuntimeError(f"pod network setup failed: {e.stderr.strip()}") from e
        return ns, addr

    def remove_pod(self, pod_id: str, addr: str | None) -> None:
        kill_netns(self.netns_name(pod_id))
        host_if = f"inf{self.slot}v{pod_id[:8]}"
        if link_exists(host_if):
            ip("link", "del", host_if, check=False)
        if addr:
            self.release_ip(addr)

    def destroy(self) -> None:
        cleanup_slot(self.slot)
        _OWNED.discard(self.slot)
        remove_blackholes_if_unused()
