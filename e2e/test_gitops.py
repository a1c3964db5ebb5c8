"""GitOps on the real control plane: Git owns what manifests/ declares, the operator never
writes it.

- `kubectl apply --server-side -k manifests/overlays/dev` twice: the second apply changes no
  object (every resourceVersion stays);
- the operator runs in-cluster (node agent, image repository ending in infleet-operator) and
  reconciles an InferenceDeployment applied from Git (manifests/examples/cpu-minimal.yaml)
  to Ready;
- then `kubectl diff -k manifests/overlays/dev` (client-side and --server-side) and
  `kubectl diff` of the example are empty (exit 0), and the example's generation is still 1:
  nothing wrote its spec;
- with autoscaling on, the worker Deployment's replicas move under the autoscaler's field
  manager (the decision its timer applies) and Git still has no diff.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from kubernetes import client

from kube_harness.cluster import Cluster
from kube_harness.testing import kubectl, ok, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent
OVERLAY = ROOT / "manifests" / "overlays" / "dev"
EXAMPLE = ROOT / "manifests" / "examples" / "cpu-minimal.yaml"
OP_NS = "infleet-system"
APPS = "infleet-e2e-gitops"
GROUP, VERSION, PLURAL = "infleet.dev", "v1alpha1", "inferencedeployments"


def resource_versions(cluster: Cluster) -> dict[str, str]:
    items = json.loads(ok(kubectl(cluster, "get", "-k", str(OVERLAY), "-o", "json")))["items"]
    out = {}
    for o in items:
        md = o["metadata"]
        out[f"{o['kind']}/{md.get('namespace', '')}/{md['name']}"] = md["resourceVersion"]
    return out


def operator_settled(cluster: Cluster) -> bool:
    apps = client.AppsV1Api(cluster.api_client())
    d = apps.read_namespaced_deployment("infleet-operator", OP_NS)
    s = d.status
    return bool(
        s.observed_generation == d.metadata.generation
        and s.ready_replicas == d.spec.replicas
        and s.updated_replicas == d.spec.replicas
        and (s.replicas or 0) == d.spec.replicas
    )


def idep(cluster: Cluster, name: str) -> dict[str, object]:
    api = client.CustomObjectsApi(cluster.api_client())
    obj: dict[str, object] = api.get_namespaced_custom_object(GROUP, VERSION, APPS, PLURAL, name)
    return obj


def is_ready(obj: dict[str, object]) -> bool:
    conds = (obj.get("status") or {}).get("conditions") or []  # type: ignore[union-attr]
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in conds)


@pytest.fixture(scope="module")
def gitops(cluster: Cluster) -> Iterator[Cluster]:
    core = client.CoreV1Api(cluster.api_client())
    try:
        core.create_namespace({"metadata": {"name": APPS}})
    except client.ApiException as e:
        if e.status != 409:
            raise
    yield cluster
    kubectl(cluster, "-n", APPS, "delete", "-f", str(EXAMPLE), "--ignore-not-found", "--wait=true")
    kubectl(cluster, "delete", "namespace", APPS, "--ignore-not-found", "--wait=false")
    # Stop the operator, keep what other scenarios share (namespace, CRDs, RBAC: the same
    # files they install); a second cluster-wide operator must not outlive this module.
    kubectl(
        cluster,
        "-n",
        OP_NS,
        "delete",
        "deployment/infleet-operator",
        "service/infleet-operator-metrics",
        "--ignore-not-found",
        "--wait=true",
    )
    wait_for(
        lambda: (
            not core.list_namespaced_pod(
                OP_NS, label_selector="app.kubernetes.io/component=operator"
            ).items
        ),
        timeout=90,
        what="operator pods gone",
    )


def test_second_apply_changes_nothing(gitops: Cluster) -> None:
    cluster = gitops
    ok(kubectl(cluster, "apply", "--server-side", "-k", str(OVERLAY)))
    ok(kubectl(cluster, "wait", "--for=condition=Established", "crd", "--all", "--timeout=60s"))
    wait_for(lambda: operator_settled(cluster), timeout=180, interval=1, what="operator rollout")
    time.sleep(3)  # let status writers (Deployment controller) go quiet
    before = resource_versions(cluster)
    ok(kubectl(cluster, "apply", "--server-side", "-k", str(OVERLAY)))
    after = resource_versions(cluster)
    rendered = [d for d in yaml.safe_load_all(ok(kubectl(cluster, "kustomize", str(OVERLAY)))) if d]
    assert len(before) == len(rendered)
    changed = {k: (before[k], after.get(k)) for k in before if before[k] != after.get(k)}
    assert not changed, f"the second apply changed: {changed}"


def test_production_overlay_passes_server_side_validation(gitops: Cluster) -> None:
    """The production overlay (peering, PDB) is valid against the cluster's OpenAPI."""
    production = ROOT / "manifests" / "overlays" / "production"
    out = ok(
        kubectl(
            gitops,
            "apply",
            "--server-side",
            "--dry-run=server",
            "--validate=strict",
            "-k",
            str(production),
        )
    )
    assert "clusterkopfpeering.kopf.dev/infleet-operator serverside-applied (server dry run)" in out
    assert "poddisruptionbudget.policy/infleet-operator serverside-applied (server dry run)" in out


def test_operator_reconciles_and_git_state_has_no_diff(gitops: Cluster) -> None:
    cluster = gitops
    pods = (
        client.CoreV1Api(cluster.api_client())
        .list_namespaced_pod(OP_NS, label_selector="app.kubernetes.io/component=operator")
        .items
    )
    assert pods and pods[0].spec.containers[0].image.split(":")[0].endswith("infleet-operator")

    ok(kubectl(cluster, "-n", APPS, "apply", "--server-side", "-f", str(EXAMPLE)))
    obj = wait_for(
        lambda: (o := idep(cluster, "mlp-cpu")) and is_ready(o) and o,
        timeout=240,
        interval=2,
        what="mlp-cpu Ready=True",
    )
    assert obj["metadata"]["generation"] == 1  # type: ignore[index]
    time.sleep(3)  # a reconcile in flight would show up below

    for mode in ([], ["--server-side"]):
        r = kubectl(cluster, "diff", *mode, "-k", str(OVERLAY))
        assert r.returncode == 0, f"kubectl diff {mode} -k overlays/dev:\n{r.stdout}{r.stderr}"
        r = kubectl(cluster, "-n", APPS, "diff", *mode, "-f", str(EXAMPLE))
        assert r.returncode == 0, f"kubectl diff {mode} example:\n{r.stdout}{r.stderr}"
    assert idep(cluster, "mlp-cpu")["metadata"]["generation"] == 1  # type: ignore[index]

    # control: a write to what Git owns does show up (so the empty diffs above mean something)
    ok(kubectl(cluster, "-n", APPS, "scale", f"{PLURAL}.{GROUP}/mlp-cpu", "--replicas=3"))
    r = kubectl(cluster, "-n", APPS, "diff", "-f", str(EXAMPLE))
    assert r.returncode == 1 and "replicas: 3" in r.stdout, r.stdout + r.stderr
    # a GitOps sync takes it back (Argo CD / Flux apply server-side with force)
    args = ["apply", "--server-side", "--force-conflicts", "-f", str(EXAMPLE)]
    ok(kubectl(cluster, "-n", APPS, *args))
    assert kubectl(cluster, "-n", APPS, "diff", "-f", str(EXAMPLE)).returncode == 0


AUTOSCALED = """\
apiVersion: infleet.dev/v1alpha1
kind: InferenceDeployment
metadata:
  name: autoscaled
spec:
  model: {name: mlp, source: builtin://mlp}
  engine: {device: cpu}
  image: example.invalid/no-pull:1   # no worker processes needed here
  autoscaling: {enabled: true, minReplicas: 2, maxReplicas: 5}
"""


def test_autoscaler_scaling_leaves_git_without_diff(gitops: Cluster, tmp_path: Path) -> None:
    """Autoscaling on: the worker Deployment's replicas belong to the autoscaler's field
    manager, Git's InferenceDeployment stays as written, and a re-sync changes nothing."""
    cluster = gitops
    manifest = tmp_path / "autoscaled.yaml"
    manifest.write_text(AUTOSCALED)
    ok(kubectl(cluster, "-n", APPS, "apply", "--server-side", "-f", str(manifest)))
    apps = client.AppsV1Api(cluster.api_client())
    wait_for(
        lambda: apps.read_namespaced_deployment("autoscaled", APPS).spec.replicas == 2,
        timeout=90,
        what="worker Deployment seeded to minReplicas by the in-cluster operator",
    )
    # the decision the autoscaler's timer applies (its own field manager)
    apps.patch_namespaced_deployment(
        "autoscaled",
        APPS,
        {"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"replicas": 4}},
        field_manager="infleet-autoscaler",
        force=True,
        _content_type="application/apply-patch+yaml",
    )
    ok(kubectl(cluster, "-n", APPS, "apply", "--server-side", "-f", str(manifest)))  # a re-sync
    time.sleep(3)
    for mode in ([], ["--server-side"]):
        r = kubectl(cluster, "-n", APPS, "diff", *mode, "-f", str(manifest))
        assert r.returncode == 0, f"kubectl diff {mode}:\n{r.stdout}{r.stderr}"
    api = client.CustomObjectsApi(cluster.api_client())
    obj = api.get_namespaced_custom_object(GROUP, VERSION, APPS, PLURAL, "autoscaled")
    assert obj["metadata"]["generation"] == 1
    assert apps.read_namespaced_deployment("autoscaled", APPS).spec.replicas == 4
    ok(kubectl(cluster, "-n", APPS, "delete", "-f", str(manifest), "--wait=false"))
