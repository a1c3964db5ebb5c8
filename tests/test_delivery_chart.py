"""charts/infleet, offline: `helm lint`, `helm template` and values.schema.json.

Uses the helm binary built from Go modules by `make k8s-bins` (kube_harness.build);
skipped with the fix when it is not built yet. The real-cluster half is e2e/test_helm.py.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "infleet"
RBAC = ROOT / "manifests" / "base" / "rbac.yaml"

Obj = dict[str, Any]


def helm_binary() -> Path:
    from kube_harness.build import find_binaries

    helm = find_binaries(check=False).helm
    if not os.access(helm, os.X_OK):
        pytest.skip(f"helm not built ({helm}): run `make k8s-bins`")
    return helm


def kube_version() -> str:
    """The harness's Kubernetes version: a helm built from Go modules without helm's own
    link flags assumes v1.20 for --kube-version, below the chart's kubeVersion."""
    from kube_harness.build import find_binaries

    return find_binaries(check=False).kubernetes_version


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, HELM_CACHE_HOME="/tmp/infleet-helm/cache")
    env |= {"HELM_CONFIG_HOME": "/tmp/infleet-helm/config", "HELM_DATA_HOME": "/tmp/infleet-helm"}
    r = subprocess.run([str(helm_binary()), *args], capture_output=True, text=True, env=env)
    if check and r.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{r.stdout}\n{r.stderr}")
    return r


def render(*sets: str, extra: tuple[str, ...] = ()) -> list[Obj]:
    args = ["template", "infleet", str(CHART), "-n", "infleet-system", *extra]
    args += ["--kube-version", kube_version()]
    for s in sets:
        args += ["--set", s]
    return [d for d in yaml.safe_load_all(helm(*args).stdout) if d]


def by_kind(objs: list[Obj]) -> dict[str, list[Obj]]:
    out: dict[str, list[Obj]] = {}
    for o in objs:
        out.setdefault(o["kind"], []).append(o)
    return out


def one(objs: list[Obj], kind: str) -> Obj:
    found = by_kind(objs).get(kind, [])
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(objs: list[Obj]) -> Obj:
    c: Obj = one(objs, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return c


def env_of(c: Obj) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in c.get("env", [])}


def source_rules() -> list[Obj]:
    for doc in yaml.safe_load_all(RBAC.read_text()):
        if doc and doc["kind"] == "ClusterRole":
            rules: list[Obj] = doc["rules"]
            return rules
    raise AssertionError("no ClusterRole in manifests/base/rbac.yaml")


# -- lint / defaults -----------------------------------------------------------------------
def test_helm_lint_strict_is_clean() -> None:
    r = helm("lint", "--strict", "--kube-version", kube_version(), str(CHART))
    assert "0 chart(s) failed" in r.stdout, r.stdout
    assert "[WARNING]" not in r.stdout, r.stdout


def test_default_render_objects() -> None:
    kinds = {(o["kind"], o["metadata"]["name"]) for o in render()}
    assert kinds == {
        ("ServiceAccount", "infleet-operator"),
        ("ClusterRole", "infleet-operator"),
        ("ClusterRoleBinding", "infleet-operator"),
        ("Service", "infleet-operator-metrics"),
        ("Deployment", "infleet-operator"),
    }


def test_chart_crds_are_the_repository_crds() -> None:
    objs = render(extra=("--include-crds",))
    rendered = {o["metadata"]["name"] for o in objs if o["kind"] == "CustomResourceDefinition"}
    wanted = set()
    for f in (ROOT / "crds").glob("*.yaml"):
        wanted |= {d["metadata"]["name"] for d in yaml.safe_load_all(f.read_text()) if d}
    assert rendered == wanted


def test_cluster_role_rules_are_the_shared_rbac_rules() -> None:
    objs = render()
    assert one(objs, "ClusterRole")["rules"] == source_rules()
    crb = one(objs, "ClusterRoleBinding")
    assert crb["roleRef"]["name"] == one(objs, "ClusterRole")["metadata"]["name"]
    assert crb["subjects"] == [
        {"kind": "ServiceAccount", "name": "infleet-operator", "namespace": "infleet-system"}
    ]


def test_operator_pod_is_locked_down() -> None:
    objs = render()
    pod = one(objs, "Deployment")["spec"]["template"]["spec"]
    c = container(objs)
    assert pod["serviceAccountName"] == "infleet-operator"
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = c["securityContext"]
    assert sc["runAsNonRoot"] is True
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    assert c["image"] == "ghcr.io/infleet/infleet-operator:0.1.0"
    assert c["image"].split(":")[0].endswith("infleet-operator")
    assert c["resources"]["requests"] and c["resources"]["limits"]["memory"]
    # the operator writes no files: nothing writable is mounted
    assert "volumeMounts" not in c


def operator_config(c: Obj, pod_name: str, monkeypatch: pytest.MonkeyPatch) -> Any:
    """What infleet-operator makes of the container's environment (its own parser)."""
    from infleet_operator.main import parse_args

    for k in list(os.environ):
        if k.startswith("INFLEET_"):
            monkeypatch.delenv(k)
    for k, v in env_of(c).items():
        if isinstance(v, str):
            monkeypatch.setenv(k, v)
    monkeypatch.setenv("POD_NAME", pod_name)
    assert env_of(c)["POD_NAME"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    cfg, _ = parse_args(c.get("args", []))
    return cfg


def test_probes_and_ports_are_what_the_operator_serves(monkeypatch: pytest.MonkeyPatch) -> None:
    objs = render()
    c = container(objs)
    cfg = operator_config(c, "infleet-operator-abc-1", monkeypatch)
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"health": cfg.health_port, "metrics": cfg.metrics_port}
    for probe in ("livenessProbe", "readinessProbe"):
        assert c[probe]["httpGet"] == {"path": "/healthz", "port": "health"}
    svc = one(objs, "Service")
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    assert svc["spec"]["selector"] == one(objs, "Deployment")["spec"]["selector"]["matchLabels"]
    # one replica: standalone, no peering object, no PDB, never two operators at once
    assert cfg.standalone is True and cfg.all_namespaces is True
    assert one(objs, "Deployment")["spec"]["strategy"] == {"type": "Recreate"}
    assert "ClusterKopfPeering" not in by_kind(objs)
    assert "PodDisruptionBudget" not in by_kind(objs)


def test_replicas_above_one_enable_peering_with_distinct_priorities(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    objs = render("replicaCount=2")
    dep = one(objs, "Deployment")
    assert dep["spec"]["replicas"] == 2
    assert dep["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": 0}
    peering = one(objs, "ClusterKopfPeering")
    assert one(objs, "PodDisruptionBudget")["spec"]["minAvailable"] == 1
    c = container(objs)
    a = operator_config(c, "infleet-operator-7d9f-abcde", monkeypatch)
    priority_a = a.effective_priority()  # read from POD_NAME at call time
    b = operator_config(c, "infleet-operator-7d9f-xyz12", monkeypatch)
    priority_b = b.effective_priority()
    assert not a.standalone and not b.standalone
    assert a.peering_name == b.peering_name == peering["metadata"]["name"]
    assert priority_a != priority_b


def test_watched_namespaces(monkeypatch: pytest.MonkeyPatch) -> None:
    c = container(render("operator.namespaces={team-a,team-b}"))
    cfg = operator_config(c, "p", monkeypatch)
    assert cfg.namespaces == ["team-a", "team-b"] and not cfg.all_namespaces


def test_service_monitor_only_with_the_prometheus_operator_api() -> None:
    assert "ServiceMonitor" not in by_kind(render())
    objs = render(extra=("--api-versions", "monitoring.coreos.com/v1"))
    sm = one(objs, "ServiceMonitor")
    assert sm["spec"]["endpoints"][0]["port"] == "metrics"
    svc_labels = one(objs, "Service")["metadata"]["labels"]
    assert sm["spec"]["selector"]["matchLabels"].items() <= svc_labels.items()
    assert "ServiceMonitor" not in by_kind(
        render(
            "metrics.serviceMonitor.enabled=false",
            extra=("--api-versions", "monitoring.coreos.com/v1"),
        )
    )


def test_image_digest_wins_over_tag() -> None:
    digest = "sha256:" + "a" * 64
    c = container(render(f"image.digest={digest}", "image.tag=9.9.9"))
    assert c["image"] == f"ghcr.io/infleet/infleet-operator@{digest}"


# -- the bundled Redis ---------------------------------------------------------------------
def test_redis_off_by_default() -> None:
    kinds = by_kind(render())
    assert "StatefulSet" not in kinds and "Secret" not in kinds


def test_bundled_redis_secret_statefulset_service() -> None:
    import base64

    from infleet_worker.config import REDIS_URL_PATTERN

    objs = render("redis.enabled=true", "redis.urlSecretNamespaces={team-a}")
    sts = one(objs, "StatefulSet")
    secrets = by_kind(objs)["Secret"]
    own = next(s for s in secrets if s["metadata"]["namespace"] == "infleet-system")
    assert own["metadata"]["name"] == "infleet-redis"
    password = base64.b64decode(own["data"]["password"]).decode()
    url = base64.b64decode(own["data"]["url"]).decode()
    assert len(password) == 32
    assert url == f"redis://:{password}@infleet-redis.infleet-system.svc:6379/0"
    assert re.fullmatch(REDIS_URL_PATTERN, url), "the CRD would refuse this URL"
    copy = next(s for s in secrets if s["metadata"]["namespace"] == "team-a")
    assert set(copy["data"]) == {"url"} and copy["data"]["url"] == own["data"]["url"]
    # the password reaches Redis from the Secret, never through the manifest
    assert password not in yaml.safe_dump(sts)
    rc = sts["spec"]["template"]["spec"]["containers"][0]
    assert rc["env"] == [
        {
            "name": "REDIS_PASSWORD",
            "valueFrom": {"secretKeyRef": {"name": "infleet-redis", "key": "password"}},
        }
    ]
    assert rc["securityContext"]["readOnlyRootFilesystem"] is True
    # persistence off: emptyDir, no claims
    assert "volumeClaimTemplates" not in sts["spec"]
    assert sts["spec"]["template"]["spec"]["volumes"] == [{"name": "data", "emptyDir": {}}]
    svc = next(s for s in by_kind(objs)["Service"] if s["metadata"]["name"] == "infleet-redis")
    assert svc["spec"]["selector"] == sts["spec"]["selector"]["matchLabels"]
    assert svc["spec"]["ports"][0]["port"] == 6379


def test_redis_persistence_and_existing_secret() -> None:
    objs = render(
        "redis.enabled=true",
        "redis.persistence.enabled=true",
        "redis.persistence.size=5Gi",
        "redis.auth.existingSecret=my-redis",
    )
    sts = one(objs, "StatefulSet")
    claim = sts["spec"]["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "5Gi"
    assert "volumes" not in sts["spec"]["template"]["spec"]
    assert "Secret" not in by_kind(objs), "existingSecret: the chart creates none"
    ref = sts["spec"]["template"]["spec"]["containers"][0]["env"][0]["valueFrom"]
    assert ref["secretKeyRef"]["name"] == "my-redis"


def test_redis_password_value_is_used() -> None:
    import base64

    objs = render("redis.enabled=true", "redis.auth.password=s3cret-pw")
    secret = one(objs, "Secret")
    assert base64.b64decode(secret["data"]["password"]) == b"s3cret-pw"


# -- values.schema.json ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "setting,named",
    [
        ("replicaCount=-1", "replicaCount"),
        ("image.pullPolicy=Sometimes", "pullPolicy"),
        ("redis.image.pullPolicy=Sometimes", "pullPolicy"),
        ("operator.logFormat=xml", "logFormat"),
        ("operator.healthPort=70000", "healthPort"),
        ("operator.namespaces={Not_A_Namespace}", "namespaces"),
        ("metrics.service.type=Ingress", "type"),
        ("replicaCunt=2", "replicaCunt"),
        ("redis.auth.password=a/b@c", "password"),
    ],
)
def test_bad_values_fail_with_a_message_naming_the_value(setting: str, named: str) -> None:
    r = helm(
        "template",
        "infleet",
        str(CHART),
        "--kube-version",
        kube_version(),
        "--set",
        setting,
        check=False,
    )
    assert r.returncode != 0, f"{setting} was accepted"
    assert "values don't meet the specifications of the schema" in r.stderr, r.stderr
    assert named in r.stderr, r.stderr


def test_schema_is_valid_json_and_covers_every_default_value() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    values = yaml.safe_load((CHART / "values.yaml").read_text())

    def walk(node: Obj, sch: Obj, path: str) -> None:
        props = sch.get("properties")
        if props is None:
            return
        for key, val in node.items():
            assert key in props, f"{path}{key} has no schema"
            sub = props[key]
            if "$ref" in sub:
                sub = schema["definitions"][sub["$ref"].rsplit("/", 1)[-1]]
            if isinstance(val, dict):
                walk(val, sub, f"{path}{key}.")

    walk(values, schema, "")


def test_versions_agree_across_pyproject_chart_images_and_manifests() -> None:
    """One release number: pyproject, Chart appVersion, image tags, Dockerfile labels."""
    import tomllib

    from infleet_operator import api

    version = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    assert chart["appVersion"] == version
    assert api.DEFAULT_IMAGE.endswith(f"/infleet-worker:{version}")
    base = (ROOT / "manifests/base/deployment.yaml").read_text()
    assert f"image: ghcr.io/infleet/infleet-operator:{version}\n" in base
    prod = yaml.safe_load((ROOT / "manifests/overlays/production/kustomization.yaml").read_text())
    assert prod["images"][0]["newTag"] == version
    for name in ("Dockerfile.operator", "Dockerfile.worker"):
        assert f"ARG VERSION={version}\n" in (ROOT / name).read_text(), name
