"""kube_harness.nodeagent.host: the helpers every node-agent module shares."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

from kube_harness.nodeagent.host import parse_quantity, pid_alive, sync_dir


def test_parse_quantity() -> None:
    assert parse_quantity("1Gi") == 1024**3
    assert parse_quantity("500M") == 500_000_000
    assert parse_quantity("3") == 3
    assert parse_quantity("250m") == 0  # a quarter core rounds down to 0 whole units
    assert parse_quantity("garbage!") == 0


def test_sync_dir_replaces_in_place(tmp_path: Path) -> None:
    sync_dir(tmp_path, {"a": (b"1", 0o644), "sub/b": (b"2", 0o600)})
    assert (tmp_path / "a").read_bytes() == b"1"
    assert (tmp_path / "sub" / "b").stat().st_mode & 0o777 == 0o600
    inode = (tmp_path / "a").stat().st_ino
    sync_dir(tmp_path, {"a": (b"1", 0o644)})
    assert (tmp_path / "a").stat().st_ino == inode  # unchanged content: not rewritten
    assert not (tmp_path / "sub" / "b").exists()
    sync_dir(tmp_path, {"a": (b"3", 0o644)})
    assert (tmp_path / "a").read_bytes() == b"3"


def test_pid_alive() -> None:
    assert pid_alive(os.getpid())
    p = subprocess.Popen(["true"])
    p.wait()
    assert not pid_alive(p.pid)
