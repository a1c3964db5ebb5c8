"""Fast checks of the harness's pure parts (no cluster)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kube_harness.build import TOOLS
from kube_harness.nodeagent import expand, map_image, parse_quantity, resolve_exe, sync_dir


@pytest.mark.parametrize(
    ("image", "entrypoint", "cmd"),
    [
        ("ghcr.io/acme/infleet-worker:0.1.0", ["infleet-worker"], []),
        ("infleet/worker", ["infleet-worker"], []),
        ("localhost:5000/infleet/operator:dev", ["infleet-operator"], []),
        ("infleet-operator@sha256:abc", ["infleet-operator"], []),
        ("python:3.11", [], ["python3"]),
        ("python", [], ["python3"]),
        ("docker.io/library/python:3.11-slim", [], ["python3"]),
    ],
)
def test_map_image(image: str, entrypoint: list[str], cmd: list[str]) -> None:
    m = map_image(image)
    assert m is not None
    assert (m.entrypoint, m.cmd) == (entrypoint, cmd)


@pytest.mark.parametrize("image", ["nginx:1.27", "registry.example/unknown:1.0", "pythonista"])
def test_unmapped_images(image: str) -> None:
    assert map_image(image) is None


def test_python_resolves_to_the_venv(tmp_path: Path) -> None:
    venv = tmp_path
    assert resolve_exe("python3", venv) == str(venv / "bin" / "python")
    assert resolve_exe("/usr/local/bin/python3.11", venv) == str(venv / "bin" / "python")
    assert resolve_exe("/bin/sh", venv) == "/bin/sh"


def test_expand_like_kubernetes() -> None:
    env = {"A": "1", "B": "two"}
    assert expand("$(A)-$(B)", env) == "1-two"
    assert expand("$(MISSING)", env) == "$(MISSING)"
    assert expand("$$(A)", env) == "$(A)"


def test_parse_quantity() -> None:
    assert parse_quantity("1Gi") == 1024**3
    assert parse_quantity("500M") == 500_000_000
    assert parse_quantity("3") == 3


def test_sync_dir_replaces_in_place(tmp_path: Path) -> None:
    sync_dir(tmp_path, {"a": (b"1", 0o644), "sub/b": (b"2", 0o600)})
    assert (tmp_path / "a").read_bytes() == b"1"
    assert (tmp_path / "sub" / "b").stat().st_mode & 0o777 == 0o600
    sync_dir(tmp_path, {"a": (b"3", 0o644)})
    assert (tmp_path / "a").read_bytes() == b"3"
    assert not (tmp_path / "sub" / "b").exists()


def test_kubernetes_gomod_replaces_every_staging_module() -> None:
    """The generated go.mod pins each staging module to the release's v0 tag."""
    k8s = TOOLS[0]
    text = k8s.gomod().read_text()
    version = k8s.version()
    staging = "v0." + version.removeprefix("v1.")
    replaces = [line.split() for line in text.splitlines() if "=>" in line]
    assert len(replaces) >= 30
    for r in replaces:
        assert r[0] == r[2] and r[0].startswith("k8s.io/") and r[3] == staging, r
    assert "tool (" in text and "k8s.io/kubernetes/cmd/kube-apiserver" in text
