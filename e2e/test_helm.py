"""charts/infleet on the real control plane: lint, server-side validation, install, an example
fleet reaching Ready through the in-cluster operator, upgrade, uninstall, bad values.

The operator pod runs through the node agent: the chart's image repository ends in
``infleet-operator``, which the agent maps to the local ``infleet-operator`` console script,
reaching the API server via in-cluster config (KUBERNETES_SERVICE_HOST/PORT + the projected
ServiceAccount token). The release is named ``infleet-e2e`` so its cluster-scoped names
(``infleet-e2e-operator``) never collide with other scenarios' use of manifests/base.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from kubernetes import client

from kube_harness.cluster import Cluster
from kube_harness.testing import kubectl, ok, wait_for

pytestmark = pytest.mark.cluster

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "infleet"
EXAMPLE = ROOT / "manifests" / "examples" / "cpu-minimal.yaml"
RELEASE = "infleet-e2e"
NS = "infleet-e2e-helm"
APPS = "infleet-e2e-apps"
OPERATOR = f"{RELEASE}-operator"
SELECTOR = f"app.kubernetes.io/instance={RELEASE},app.kubernetes.io/component=operator"
GROUP, VERSION, PLURAL = "infleet.dev", "v1alpha1", "inferencedeployments"
IDEP_CRD = f"{PLURAL}.{GROUP}"


def helm(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(cluster.helm), *args], env=cluster.env, text=True, capture_output=True
    )


def ensure_namespace(cluster: Cluster, name: str) -> None:
    core = client.CoreV1Api(cluster.api_client())
    try:
        core.create_namespace({"metadata": {"name": name}})
    except client.ApiException as e:
        if e.status != 409:
            raise


def apply_crds(cluster: Cluster) -> None:
    """The documented upgrade step (Helm never upgrades crds/): server-side, forced."""
    ok(kubectl(cluster, "apply", "--server-side", "--force-conflicts", "-f", str(CHART / "crds")))
    for crd in ("inferencedeployments.infleet.dev", "clusterkopfpeerings.kopf.dev"):
        ok(kubectl(cluster, "wait", "--for=condition=Established", f"crd/{crd}", "--timeout=60s"))


def printer_columns(cluster: Cluster) -> list[str]:
    crd = json.loads(ok(kubectl(cluster, "get", "crd", IDEP_CRD, "-o", "json")))
    return [c["name"] for c in crd["spec"]["versions"][0].get("additionalPrinterColumns", [])]


def operator_pods(cluster: Cluster) -> list[Any]:
    core = client.CoreV1Api(cluster.api_client())
    return [
        p
        for p in core.list_namespaced_pod(NS, label_selector=SELECTOR).items
        if not p.metadata.deletion_timestamp
    ]


def ready(pod: Any) -> bool:
    return any(c.type == "Ready" and c.status == "True" for c in pod.status.conditions or [])


def wait_rollout(cluster: Cluster, timeout: int = 180) -> None:
    ok(
        kubectl(
            cluster,
            "-n",
            NS,
            "rollout",
            "status",
            f"deployment/{OPERATOR}",
            f"--timeout={timeout}s",
        )
    )


def idep_condition(cluster: Cluster, ns: str, name: str, cond: str) -> str | None:
    api = client.CustomObjectsApi(cluster.api_client())
    obj = api.get_namespaced_custom_object(GROUP, VERSION, ns, PLURAL, name)
    for c in (obj.get("status") or {}).get("conditions") or []:
        if c.get("type") == cond:
            return str(c.get("status"))
    return None


@pytest.fixture(scope="module")
def release(cluster: Cluster) -> Iterator[Cluster]:
    ensure_namespace(cluster, NS)
    ensure_namespace(cluster, APPS)
    yield cluster
    # best effort: whatever a failed test left behind
    kubectl(cluster, "-n", APPS, "delete", "-f", str(EXAMPLE), "--ignore-not-found", "--wait=false")
    helm(cluster, "uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "120s")
    for ns in (APPS, NS):
        kubectl(cluster, "delete", "namespace", ns, "--ignore-not-found", "--wait=false")


def test_lint_and_rendered_objects_pass_server_side_validation(release: Cluster) -> None:
    cluster = release
    version = json.loads(ok(kubectl(cluster, "version", "-o", "json")))["serverVersion"]
    lint = ok(
        helm(cluster, "lint", "--strict", "--kube-version", version["gitVersion"], str(CHART))
    )
    assert "0 chart(s) failed" in lint
    apply_crds(cluster)  # the ClusterKopfPeering kind must be known to validate it
    for sets in (
        [],
        ["replicaCount=2", "operator.namespaces={default}"],
        [
            "redis.enabled=true",
            "redis.persistence.enabled=true",
            f"redis.urlSecretNamespaces={{{APPS}}}",
        ],
    ):
        args = ["template", RELEASE, str(CHART), "-n", NS, "--validate"]
        for s in sets:
            args += ["--set", s]
        rendered = ok(helm(cluster, *args))  # --validate: against the cluster's OpenAPI
        kinds = {d["kind"] for d in yaml.safe_load_all(rendered) if d}
        assert "Deployment" in kinds
        out = ok(
            kubectl(
                cluster,
                "apply",
                "--dry-run=server",
                "--validate=strict",
                "-f",
                "-",
                input=rendered,
            )
        )
        assert "(server dry run)" in out, out


def test_install_then_the_example_reaches_ready(release: Cluster) -> None:
    cluster = release
    out = ok(helm(cluster, "install", RELEASE, str(CHART), "-n", NS, "--wait", "--timeout", "180s"))
    assert "kubectl apply -f manifests/examples/cpu-minimal.yaml" in out  # NOTES.txt
    pods = operator_pods(cluster)
    assert len(pods) == 1 and ready(pods[0])
    image = pods[0].spec.containers[0].image
    assert image.split(":")[0].endswith("infleet-operator"), image

    ok(kubectl(cluster, "-n", APPS, "apply", "--server-side", "-f", str(EXAMPLE)))
    wait_for(
        lambda: idep_condition(cluster, APPS, "mlp-cpu", "Ready") == "True",
        timeout=240,
        interval=2,
        what="InferenceDeployment mlp-cpu Ready=True (reconciled by the in-cluster operator)",
    )


def test_upgrade_with_changed_values_rolls_the_operator(release: Cluster) -> None:
    cluster = release
    before = {p.metadata.name for p in operator_pods(cluster)}
    assert before, "install did not run"
    # A cluster with an older CRD (one printer column fewer): helm upgrade leaves it old,
    # the documented server-side apply of charts/infleet/crds/ brings it up to date.
    columns = printer_columns(cluster)
    ok(
        kubectl(
            cluster,
            "patch",
            "crd",
            IDEP_CRD,
            "--type=json",
            "-p",
            json.dumps(
                [
                    {
                        "op": "remove",
                        "path": f"/spec/versions/0/additionalPrinterColumns/{len(columns) - 1}",
                    }
                ]
            ),
        )
    )
    assert printer_columns(cluster) == columns[:-1]
    ok(helm(cluster, "upgrade", RELEASE, str(CHART), "-n", NS, "--reuse-values", "--wait"))
    assert printer_columns(cluster) == columns[:-1], "helm upgraded a CRD (it never should)"
    apply_crds(cluster)  # documented: before every helm upgrade
    assert printer_columns(cluster) == columns
    ok(
        helm(
            cluster,
            "upgrade",
            RELEASE,
            str(CHART),
            "-n",
            NS,
            "--reuse-values",
            "--set",
            "operator.verbose=true",
            "--wait",
            "--timeout",
            "180s",
        )
    )
    wait_rollout(cluster)
    pods = wait_for(
        lambda: [p for p in operator_pods(cluster) if p.metadata.name not in before and ready(p)],
        timeout=120,
        what="a new operator pod",
    )
    env = {e.name: e.value for e in pods[0].spec.containers[0].env}
    assert env["INFLEET_VERBOSE"] == "1"
    wait_for(lambda: not (before & {p.metadata.name for p in operator_pods(cluster)}), timeout=60)

    # two replicas: kopf peering on, a ClusterKopfPeering owned by the release
    ok(
        helm(
            cluster,
            "upgrade",
            RELEASE,
            str(CHART),
            "-n",
            NS,
            "--reuse-values",
            "--set",
            "replicaCount=2",
            "--wait",
            "--timeout",
            "180s",
        )
    )
    wait_rollout(cluster)
    pods = wait_for(
        lambda: (ps := [p for p in operator_pods(cluster) if ready(p)]) and len(ps) == 2 and ps,
        timeout=120,
        what="two Ready operator pods",
    )
    for p in pods:
        env = {e.name: e.value for e in p.spec.containers[0].env}
        assert env["INFLEET_PEERING_NAME"] == OPERATOR and "INFLEET_STANDALONE" not in env
    ok(kubectl(cluster, "get", "clusterkopfpeering", OPERATOR))
    # the fleet is still served
    assert idep_condition(cluster, APPS, "mlp-cpu", "Ready") == "True"


def test_uninstall_leaves_only_the_crds(release: Cluster) -> None:
    cluster = release
    ok(kubectl(cluster, "-n", APPS, "delete", "-f", str(EXAMPLE), "--wait=true", "--timeout=120s"))
    ok(helm(cluster, "uninstall", RELEASE, "-n", NS, "--wait", "--timeout", "120s"))
    label = f"app.kubernetes.io/instance={RELEASE}"
    wait_for(lambda: not operator_pods(cluster), timeout=90, what="operator pods gone")
    kinds = (
        "deployments,replicasets,services,serviceaccounts,secrets,configmaps,"
        "poddisruptionbudgets,statefulsets"
    )
    left = ok(kubectl(cluster, "get", kinds, "-A", "-l", label, "-o", "name"))
    assert not left.strip(), f"left behind in namespaces: {left}"
    left = ok(
        kubectl(
            cluster,
            "get",
            "clusterroles,clusterrolebindings,clusterkopfpeerings",
            "-l",
            label,
            "-o",
            "name",
        )
    )
    assert not left.strip(), f"left behind cluster-wide: {left}"
    # helm's own release records are gone too
    assert not ok(kubectl(cluster, "-n", NS, "get", "secrets", "-l", "owner=helm", "-o", "name"))
    # what docs/install.md says Helm keeps: the CRDs
    for crd in ("inferencedeployments.infleet.dev", "clusterkopfpeerings.kopf.dev"):
        ok(kubectl(cluster, "get", "crd", crd))


@pytest.mark.parametrize(
    "setting,named",
    [("replicaCount=-1", "replicaCount"), ("image.pullPolicy=Sometimes", "pullPolicy")],
)
def test_invalid_values_fail_install_naming_the_value(
    release: Cluster, setting: str, named: str
) -> None:
    cluster = release
    r = helm(cluster, "install", "infleet-bad", str(CHART), "-n", NS, "--set", setting)
    assert r.returncode != 0, f"{setting} was installed"
    assert named in r.stderr, r.stderr
    assert "schema" in r.stderr, r.stderr
    assert helm(cluster, "status", "infleet-bad", "-n", NS).returncode != 0
