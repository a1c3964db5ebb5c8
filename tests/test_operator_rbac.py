"""manifests/base/rbac.yaml grants exactly what the operator's code calls, no more, no less."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import kopf
import yaml

from fakekube import FakeKube
from infleet_operator import api, apply, handlers, kopf_settings, naming
from infleet_operator.runtime import Runtime

ROOT = Path(__file__).resolve().parents[1]
Perm = tuple[str, str, str]

SPEC: dict[str, Any] = {
    "model": {"name": "mlp", "source": "builtin://mlp"},
    "engine": {"device": "cpu"},
    "autoscaling": {"enabled": True, "minReplicas": 1, "maxReplicas": 3},
}


def granted() -> set[Perm]:
    docs = list(yaml.safe_load_all((ROOT / "manifests/base/rbac.yaml").read_text()))
    kinds = {d["kind"] for d in docs}
    assert kinds == {"ServiceAccount", "ClusterRole", "ClusterRoleBinding"}
    role = next(d for d in docs if d["kind"] == "ClusterRole")
    binding = next(d for d in docs if d["kind"] == "ClusterRoleBinding")
    sa = next(d for d in docs if d["kind"] == "ServiceAccount")
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    assert binding["subjects"] == [
        {
            "kind": "ServiceAccount",
            "name": sa["metadata"]["name"],
            "namespace": sa["metadata"]["namespace"],
        }
    ]
    out: set[Perm] = set()
    for rule in role["rules"]:
        assert "*" not in rule["verbs"] and "*" not in rule["resources"]
        for g in rule["apiGroups"]:
            for r in rule["resources"]:
                for v in rule["verbs"]:
                    assert (g, r, v) not in out, f"duplicate grant {(g, r, v)}"
                    out.add((g, r, v))
    return out


def kopf_needs() -> set[Perm]:
    """What kopf itself calls for our handlers and settings."""
    reg = kopf.get_default_registry()
    needs: set[Perm] = set()
    for sub in (reg._indexing, reg._watching, reg._changing):
        for h in sub.get_all_handlers():
            s = h.selector
            group = s.group or ""
            needs |= {
                (group, s.any_name or s.plural, "list"),
                (group, s.any_name or s.plural, "watch"),
            }
    # kopf's bookkeeping annotations (progress, last-handled-configuration)
    needs.add((api.GROUP, api.PLURAL, "patch"))
    # kopf.event / kopf.info post core/v1 events
    needs.add(("", "events", "create"))
    # peering: watch the ClusterKopfPeering, keep-alives are merge patches of it
    needs |= {("kopf.dev", "clusterkopfpeerings", v) for v in ("list", "watch", "patch")}
    return needs


async def our_calls() -> set[Perm]:
    kube = FakeKube()
    b = {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "metadata": {"name": "m", "namespace": "ns", "uid": "u", "generation": 1},
        "spec": SPEC,
    }
    kube.objects[(api.KIND, "ns", "m")] = dict(b, metadata=dict(b["metadata"], resourceVersion="1"))
    spec = api.InferenceDeploymentSpec.model_validate(SPEC)
    await apply.reconcile_children(kube, b, spec)  # create path (+ autoscaler seed)
    kube.conflict_once.add("Service/m")
    await apply.reconcile_children(kube, b, spec)  # update path, forced conflict
    rt = Runtime(kube=kube)  # type: ignore[arg-type]
    stale = dict(b, metadata=dict(b["metadata"], resourceVersion="0"))
    await rt.refresh(("ns", "m"), body=stale)  # 409 -> fresh get -> patch status
    await kopf_settings.ensure_peering(kube, "infleet-operator", logging.getLogger())
    return set(kube.calls)


async def test_rbac_is_exactly_what_is_used() -> None:
    assert handlers.IDEP  # the handlers are registered
    used = kopf_needs() | await our_calls()
    have = granted()
    assert used - have == set(), f"missing permissions: {sorted(used - have)}"
    assert have - used == set(), f"unused permissions: {sorted(have - used)}"


def test_child_labels_select_only_ours() -> None:
    assert handlers.CHILD_LABELS[naming.LABEL_MANAGED_BY] == naming.FIELD_MANAGER
