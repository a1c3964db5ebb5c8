"""Host mountpoints for pods' bind mounts, shared machine-wide by every agent."""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path
from typing import Any

from kube_harness.nodeagent.host import pid_alive


class MountPoints:
    """Creates missing mountPath directories on the host and removes them when unused.

    Several clusters (other test sessions, ``make cluster-up``) may run on one
    machine, each with its own agent, and removing a directory that another
    pod's mount namespace uses as a mountpoint detaches that mount. So the
    bookkeeping is machine-wide: a JSON registry under /run guarded by flock,
    with users ``<agent pid>:<pod uid>``; users whose agent died are pruned.
    """

    STATE = Path("/run/infleet-mountpoints")

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state = state_dir or self.STATE
        self.state.mkdir(parents=True, exist_ok=True)

    @contextlib.contextmanager
    def _registry(self) -> Any:
        import fcntl

        with (self.state / ".lock").open("a+") as lockf:
            fcntl.flock(lockf, fcntl.LOCK_EX)
            path = self.state / "registry.json"
            try:
                reg: dict[str, list[str]] = json.loads(path.read_text())
            except (OSError, ValueError):
                reg = {}
            for k, users in list(reg.items()):
                reg[k] = [u for u in users if pid_alive(int(u.split(":", 1)[0]))]
            yield reg
            self._remove_unused(reg)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(reg))
            os.replace(tmp, path)

    @staticmethod
    def _remove_unused(reg: dict[str, list[str]]) -> None:
        for k in sorted(reg, key=len, reverse=True):
            if reg[k]:
                continue
            p = Path(k)
            with contextlib.suppress(OSError):
                if p.is_file() and not p.is_symlink():
                    if p.stat().st_size == 0:
                        p.unlink()
                else:
                    p.rmdir()
            if not p.exists() or (p.is_dir() and any(p.iterdir())):
                del reg[k]  # gone, or someone put things there: not ours any more

    def acquire(self, target: Path, is_file: bool, user: str) -> None:
        with self._registry() as reg:
            p = target.parent if is_file else target
            missing: list[Path] = []
            while not p.exists():
                missing.append(p)
                p = p.parent
            for m in reversed(missing):
                m.mkdir(exist_ok=True)
                reg.setdefault(str(m), [])
            if is_file and not target.exists():
                target.touch()
                reg.setdefault(str(target), [])
            for c in (target, *target.parents):
                if str(c) in reg and user not in reg[str(c)]:
                    reg[str(c)].append(user)

    def release(self, user: str) -> None:
        with self._registry() as reg:
            for users in reg.values():
                if user in users:
                    users.remove(user)

    def sweep(self) -> None:
        """Drop dead agents' users and remove what nobody uses."""
        with self._registry():
            pass
