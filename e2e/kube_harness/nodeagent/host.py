"""Host helpers the node agent's modules share: time stamps, the venv, files, quantities."""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

log = logging.getLogger("kube_harness.nodeagent")

Obj = dict[str, Any]

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def venv_dir() -> Path:
    """The venv whose entry points stand in for images (INFLEET_VENV, else this one)."""
    env = os.environ.get("INFLEET_VENV")
    if env and (Path(env) / "bin" / "python").exists():
        return Path(env)
    return Path(sys.prefix)


def sync_dir(d: Path, files: dict[str, tuple[bytes, int]]) -> None:
    """Make ``d`` hold exactly ``files`` (atomic per-file replace, in place)."""
    for rel, (data, mode) in files.items():
        p = d / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        try:
            if p.read_bytes() == data and (p.stat().st_mode & 0o777) == mode:
                continue
        except OSError:
            pass
        tmp = p.with_name(f".{p.name}.tmp")
        tmp.write_bytes(data)
        tmp.chmod(mode)
        os.replace(tmp, p)
    wanted = {str(d / r) for r in files}
    for root, _dirs, names in os.walk(d):
        for n in names:
            full = os.path.join(root, n)
            if full not in wanted:
                with contextlib.suppress(OSError):
                    os.unlink(full)


_SUFFIX = {
    "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4,
    "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4, "m": 0.001,
}  # fmt: skip


def parse_quantity(q: str) -> int:
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", q.strip())
    if not m:
        return 0
    return int(float(m.group(1)) * _SUFFIX.get(m.group(2), 1))


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
