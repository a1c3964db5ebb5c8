"""kube_harness.nodeagent.mounts: mountpoints made on demand and removed when unused."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from kube_harness.nodeagent.mounts import MountPoints


def test_acquire_creates_and_release_removes(tmp_path: Path) -> None:
    mp = MountPoints(tmp_path / "state")
    target = tmp_path / "a" / "b" / "c"
    mp.acquire(target, False, "1:pod-a")
    mp.acquire(target, False, "1:pod-b")
    assert target.is_dir()
    mp.release("1:pod-a")
    assert target.is_dir()  # pod-b still uses it
    mp.release("1:pod-b")
    assert not (tmp_path / "a").exists()


def test_file_targets_and_foreign_content(tmp_path: Path) -> None:
    mp = MountPoints(tmp_path / "state")
    (tmp_path / "etc").mkdir()
    target = tmp_path / "etc" / "new" / "conf.json"
    mp.acquire(target, True, "1:pod")
    assert target.is_file()
    (target.parent / "someone-elses").write_text("x")
    mp.release("1:pod")
    assert not target.exists()  # ours, empty: removed
    assert (target.parent / "someone-elses").exists()  # not ours any more: kept
    assert (tmp_path / "etc").is_dir()  # existed before: never ours


def test_users_of_dead_agents_are_pruned(tmp_path: Path) -> None:
    dead = subprocess.Popen(["true"])
    dead.wait()
    mp = MountPoints(tmp_path / "state")
    target = tmp_path / "m"
    mp.acquire(target, False, f"{dead.pid}:pod")
    registry = json.loads((tmp_path / "state" / "registry.json").read_text())
    assert registry[str(target)] == [f"{dead.pid}:pod"]
    mp.sweep()
    assert not target.exists()
