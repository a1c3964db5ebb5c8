"""The chart and the kustomize base carry byte-identical copies of the one sources of truth.

- ``crds/*.yaml`` (rendered from the models by ``make crds``)
  -> ``charts/infleet/crds/`` (Helm installs a chart's crds/ on first install)
  -> ``manifests/base/crds/`` (kustomize refuses files outside a kustomization's root,
     so ``../../crds`` cannot be referenced directly)
- ``manifests/base/rbac.yaml`` (the operator's RBAC, owned next to the operator)
  -> ``charts/infleet/files/rbac.yaml`` (the chart's ClusterRole takes its rules from it)

Refresh the copies with ``python tests/test_delivery_sync.py`` (``make chart-sync``).
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CRDS = ROOT / "crds"
RBAC = ROOT / "manifests" / "base" / "rbac.yaml"
CRD_COPIES = (ROOT / "charts" / "infleet" / "crds", ROOT / "manifests" / "base" / "crds")
RBAC_COPY = ROOT / "charts" / "infleet" / "files" / "rbac.yaml"
FIX = "run `python tests/test_delivery_sync.py` (make chart-sync)"


def copies() -> list[tuple[Path, Path]]:
    pairs = [(src, dst / src.name) for dst in CRD_COPIES for src in sorted(CRDS.glob("*.yaml"))]
    if RBAC.exists():
        pairs.append((RBAC, RBAC_COPY))
    return pairs


def sync() -> list[Path]:
    changed = []
    for src, dst in copies():
        if not dst.exists() or dst.read_bytes() != src.read_bytes():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            changed.append(dst)
    wanted = {dst for _, dst in copies()}
    for d in CRD_COPIES:
        for stale in d.glob("*.yaml"):
            if stale not in wanted:
                stale.unlink()
                changed.append(stale)
    return changed


@pytest.mark.parametrize("src,dst", copies(), ids=lambda p: str(p.relative_to(ROOT)))
def test_copy_is_identical(src: Path, dst: Path) -> None:
    assert dst.exists(), f"{dst.relative_to(ROOT)} missing: {FIX}"
    assert dst.read_bytes() == src.read_bytes(), f"{dst.relative_to(ROOT)} is stale: {FIX}"


@pytest.mark.parametrize("d", CRD_COPIES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_extra_crds_in_copies(d: Path) -> None:
    extra = {p.name for p in d.glob("*.yaml")} - {p.name for p in CRDS.glob("*.yaml")}
    assert not extra, f"{d.relative_to(ROOT)} has CRDs that crds/ no longer has: {extra}; {FIX}"


def test_rbac_source_exists() -> None:
    if not RBAC.exists():
        pytest.skip("manifests/base/rbac.yaml not landed yet (owned by the operator)")
    assert RBAC_COPY.read_bytes() == RBAC.read_bytes(), FIX


if __name__ == "__main__":
    for p in sync():
        print(f"updated {p.relative_to(ROOT)}")
    sys.exit(0)
