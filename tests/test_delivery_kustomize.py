"""manifests/: the kustomize base renders the same objects as the chart with default values,
and the overlays say what docs/install.md says they do.

Rendering uses `kubectl kustomize` from the kubectl built by `make k8s-bins` and
`helm template` from the helm built the same way; skipped with the fix when either is
not built yet.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent

Obj = dict[str, Any]
# Labels Helm adds for its own bookkeeping; the rest must match.
HELM_ONLY_LABELS = {"helm.sh/chart", "app.kubernetes.io/managed-by", "app.kubernetes.io/version"}


def tool(name: str) -> Path:
    from kube_harness.build import find_binaries

    path: Path = getattr(find_binaries(check=False), name)
    if not os.access(path, os.X_OK):
        pytest.skip(f"{name} not built ({path}): run `make k8s-bins`")
    return path


def find_binaries_version() -> str:
    from kube_harness.build import find_binaries

    return find_binaries(check=False).kubernetes_version


def run(*argv: str) -> str:
    env = dict(os.environ, HELM_CACHE_HOME="/tmp/infleet-helm/cache")
    env |= {"HELM_CONFIG_HOME": "/tmp/infleet-helm/config", "HELM_DATA_HOME": "/tmp/infleet-helm"}
    r = subprocess.run(argv, capture_output=True, text=True, env=env)
    assert r.returncode == 0, f"{' '.join(argv)}:\n{r.stderr}"
    return r.stdout


def kustomize(path: str) -> list[Obj]:
    out = run(str(tool("kubectl")), "kustomize", str(ROOT / path))
    return [d for d in yaml.safe_load_all(out) if d]


def chart(*sets: str) -> list[Obj]:
    args = ["template", "infleet", str(ROOT / "charts/infleet"), "-n", "infleet-system"]
    args += ["--include-crds", "--kube-version", find_binaries_version()]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(run(str(tool("helm")), *args)) if d]


def index(objs: list[Obj]) -> dict[tuple[str, str, str], Obj]:
    return {(o["kind"], o["metadata"].get("namespace", ""), o["metadata"]["name"]): o for o in objs}


def key_fields(o: Obj) -> Obj:
    """What must agree between the chart and the base, per kind."""
    kind = o["kind"]
    spec = o.get("spec", {})
    if kind == "Deployment":
        tpl = spec["template"]
        return {
            "replicas": spec["replicas"],
            "selector": spec["selector"],
            "strategy": spec.get("strategy"),
            "labels": tpl["metadata"]["labels"],
            "pod": tpl["spec"],
        }
    if kind == "Service":
        return {"type": spec.get("type"), "selector": spec["selector"], "ports": spec["ports"]}
    if kind == "ClusterRole":
        return {"rules": o["rules"]}
    if kind == "ClusterRoleBinding":
        return {"roleRef": o["roleRef"], "subjects": o["subjects"]}
    if kind == "CustomResourceDefinition":
        return {"spec": spec}
    return {}


def test_base_and_chart_render_the_same_objects() -> None:
    base = index(kustomize("manifests/base"))
    helm = index(chart())
    assert ("Namespace", "", "infleet-system") in base  # helm: --create-namespace
    base.pop(("Namespace", "", "infleet-system"))
    assert sorted(base) == sorted(helm)
    for key, b in base.items():
        h = helm[key]
        assert key_fields(b) == key_fields(h), f"{key} differs between manifests/base and chart"
        hl = {k: v for k, v in h["metadata"].get("labels", {}).items() if k not in HELM_ONLY_LABELS}
        bl = b["metadata"].get("labels", {})
        if key[0] in ("Deployment", "Service"):
            assert bl == hl, f"{key} labels"


def test_base_lists_every_crd_copy() -> None:
    names = {p.name for p in (ROOT / "crds").glob("*.yaml")}
    kust = yaml.safe_load((ROOT / "manifests/base/kustomization.yaml").read_text())
    listed = {Path(r).name for r in kust["resources"] if r.startswith("crds/")}
    assert listed == names, "manifests/base/kustomization.yaml must list every crds/*.yaml"


def container(objs: list[Obj]) -> Obj:
    dep = next(o for o in objs if o["kind"] == "Deployment")
    c: Obj = dep["spec"]["template"]["spec"]["containers"][0]
    return c


def env_names(c: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in c["env"]}


def test_dev_overlay() -> None:
    objs = kustomize("manifests/overlays/dev")
    c = container(objs)
    assert c["image"] == "ghcr.io/infleet/infleet-operator:dev"
    env = env_names(c)
    assert env["INFLEET_VERBOSE"] == "1" and env["INFLEET_STANDALONE"] == "1"
    assert not [o for o in objs if o["kind"] == "ClusterKopfPeering"]
    # only namespaced objects in infleet-system, the rest cluster-scoped
    cluster_scoped = {"Namespace", "CustomResourceDefinition", "ClusterRole", "ClusterRoleBinding"}
    for o in objs:
        ns = o["metadata"].get("namespace")
        assert (ns is None) == (o["kind"] in cluster_scoped), o["kind"]
        assert ns in (None, "infleet-system")


def test_production_overlay_runs_two_peered_replicas() -> None:
    objs = kustomize("manifests/overlays/production")
    dep = next(o for o in objs if o["kind"] == "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["type"] == "RollingUpdate"
    c = container(objs)
    env = env_names(c)
    assert "INFLEET_STANDALONE" not in env
    peering = [o for o in objs if o["kind"] == "ClusterKopfPeering"]
    assert [p["metadata"]["name"] for p in peering] == [env["INFLEET_PEERING_NAME"]]
    pdb = next(o for o in objs if o["kind"] == "PodDisruptionBudget")
    assert pdb["spec"]["selector"]["matchLabels"] == dep["spec"]["selector"]["matchLabels"]
    assert c["image"] == "ghcr.io/infleet/infleet-operator:0.1.0"


def test_production_overlay_matches_chart_with_two_replicas() -> None:
    """The chart's replicaCount=2 renders what the production overlay adds (same names)."""
    prod = index(kustomize("manifests/overlays/production"))
    helm = index(chart("replicaCount=2"))
    for kind in ("ClusterKopfPeering", "PodDisruptionBudget"):
        assert {k for k in prod if k[0] == kind} == {k for k in helm if k[0] == kind}, kind
    pe = env_names(container(list(prod.values())))
    he = env_names(container(list(helm.values())))
    assert pe["INFLEET_PEERING_NAME"] == he["INFLEET_PEERING_NAME"]
    assert "INFLEET_STANDALONE" not in he
