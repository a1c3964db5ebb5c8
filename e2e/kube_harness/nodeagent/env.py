"""A container's environment: literals, ``$(VAR)``, field/resource refs, ConfigMaps, Secrets."""

from __future__ import annotations

import base64
import json
import math
import os
import re
from typing import Any

from kube_harness.nodeagent.context import NodeContext
from kube_harness.nodeagent.host import DEFAULT_PATH, Obj, parse_quantity


class EnvError(RuntimeError):
    pass


_VAR_RE = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.\-]*)\)")


def expand(s: str, env: dict[str, str]) -> str:
    """Kubernetes ``$(VAR)`` expansion (``$$`` escapes, unknown refs stay as-is)."""

    def rep(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        return env.get(m.group(1), m.group(0))

    return _VAR_RE.sub(rep, s)


def field_ref(pod: Obj, path: str, pod_ip: str | None, host_ip: str) -> str:
    """The value of a downward-API ``fieldPath`` of ``pod``."""
    md = pod["metadata"]
    simple = {
        "metadata.name": md["name"],
        "metadata.namespace": md["namespace"],
        "metadata.uid": md["uid"],
        "spec.nodeName": pod["spec"].get("nodeName", ""),
        "spec.serviceAccountName": pod["spec"].get("serviceAccountName", ""),
        "status.podIP": pod_ip or "",
        "status.podIPs": pod_ip or "",
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return str(simple[path])
    m = re.fullmatch(r"metadata\.(labels|annotations)\['(.+)'\]", path)
    if m:
        return str((md.get(m.group(1)) or {}).get(m.group(2), ""))
    if path in ("metadata.labels", "metadata.annotations"):
        d = md.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(d.items()))
    return ""


def resource_ref(pod: Obj, ref: Obj, container: Obj | None, node: NodeContext) -> str:
    """A ``resourceFieldRef`` (requests/limits, the node's capacity when unset), divided."""
    name = ref.get("containerName")
    c = container
    if name:
        c = next((x for x in pod["spec"]["containers"] if x["name"] == name), container)
    res = ref["resource"]  # e.g. limits.cpu
    kind, _, rname = res.partition(".")
    val = ((c or {}).get("resources") or {}).get(kind, {}).get(rname)
    if val is None:
        val = {"cpu": node.cpu, "memory": node.memory}.get(rname, "0")
    if rname == "cpu":
        q = str(val)
        cores = float(q[:-1]) / 1000 if q.endswith("m") else float(q)
        div = ref.get("divisor", "1")
        d = float(div[:-1]) / 1000 if str(div).endswith("m") else float(div)
        return str(math.ceil(cores / d))
    return str(parse_quantity(str(val)))


def container_env(
    node: NodeContext, core: Any, pod: Obj, c: Obj, pod_ip: str | None
) -> dict[str, str]:
    """The process environment of container ``c`` (raises EnvError like a kubelet's
    CreateContainerConfigError)."""
    from kubernetes import client

    md = pod["metadata"]
    namespace = md["namespace"]
    env: dict[str, str] = {
        "PATH": f"{node.venv}/bin:{DEFAULT_PATH}",
        "HOSTNAME": pod["spec"].get("hostname") or md["name"][:63],
        "HOME": os.environ.get("HOME", "/root"),
        "LANG": "C.UTF-8",
        "KUBERNETES_SERVICE_HOST": node.host_ip,
        "KUBERNETES_SERVICE_PORT": str(node.api_port),
        "KUBERNETES_SERVICE_PORT_HTTPS": str(node.api_port),
        "KUBERNETES_PORT": f"tcp://{node.host_ip}:{node.api_port}",
    }

    def cm(name: str) -> Obj:
        r = core.read_namespaced_config_map(name, namespace, _preload_content=False)
        return dict(json.loads(r.data).get("data") or {})

    def secret(name: str) -> Obj:
        r = core.read_namespaced_secret(name, namespace, _preload_content=False)
        raw = json.loads(r.data).get("data") or {}
        return {k: base64.b64decode(v).decode(errors="replace") for k, v in raw.items()}

    for ef in c.get("envFrom") or []:
        prefix = ef.get("prefix", "")
        ref = ef.get("configMapRef") or ef.get("secretRef") or {}
        try:
            data = cm(ref["name"]) if "configMapRef" in ef else secret(ref["name"])
        except client.ApiException as exc:
            if exc.status == 404 and ref.get("optional"):
                continue
            raise EnvError(f"envFrom {ref.get('name')}: {exc.reason}") from exc
        for k, v in data.items():
            env[prefix + k] = v
    for e in c.get("env") or []:
        name = e["name"]
        if "valueFrom" not in e:
            env[name] = expand(e.get("value", ""), env)
            continue
        vf = e["valueFrom"]
        if "fieldRef" in vf:
            env[name] = field_ref(pod, vf["fieldRef"]["fieldPath"], pod_ip, node.host_ip)
        elif "resourceFieldRef" in vf:
            env[name] = resource_ref(pod, vf["resourceFieldRef"], c, node)
        else:
            ref = vf.get("configMapKeyRef") or vf.get("secretKeyRef") or {}
            try:
                data = cm(ref["name"]) if "configMapKeyRef" in vf else secret(ref["name"])
            except client.ApiException as ex:
                if ex.status == 404 and ref.get("optional"):
                    continue
                raise EnvError(f"{name}: {ref.get('name')} not found") from ex
            if ref["key"] not in data:
                if ref.get("optional"):
                    continue
                raise EnvError(f"{name}: key {ref['key']} not found in {ref['name']}")
            env[name] = data[ref["key"]]
    return env
