"""A pod's volumes: ConfigMap, Secret, downwardAPI, projected (token), emptyDir, hostPath.

Sources are written under the pod's directory and bind-mounted at each
container's ``mountPath`` by a small shell script run inside the container's
own mount namespace.
"""

from __future__ import annotations

import base64
import json
import shlex
import time
from pathlib import Path
from typing import Any

from kube_harness.nodeagent.containers import Container
from kube_harness.nodeagent.context import NodeContext
from kube_harness.nodeagent.env import field_ref, resource_ref
from kube_harness.nodeagent.host import Obj, sync_dir

Files = dict[str, tuple[bytes, int]]


class VolumeError(RuntimeError):
    pass


class PodVolumes:
    def __init__(self, node: NodeContext, core: Any, pod_dir: Path, mount_user: str) -> None:
        self.node = node
        self.core = core
        self.dir = pod_dir
        self.mount_user = mount_user
        self.token_refresh_at: dict[str, float] = {}

    def volume_dir(self, name: str) -> Path:
        return self.dir / "volumes" / name

    # -- sources
    def write(self, pod: Obj, pod_ip: str | None) -> None:
        """(Re)write every volume's files; raises VolumeError for a missing source."""
        for v in pod["spec"].get("volumes") or []:
            d = self.volume_dir(v["name"])
            d.mkdir(parents=True, exist_ok=True)
            if "emptyDir" in v or "hostPath" in v:
                continue
            files = self._volume_files(pod, pod_ip, v)
            if files is None:
                continue
            sync_dir(d, files)

    def _volume_files(self, pod: Obj, pod_ip: str | None, v: Obj) -> Files | None:
        ns = pod["metadata"]["namespace"]
        if "configMap" in v:
            return self._source_files(ns, v["configMap"], "configMap", 0o644)
        if "secret" in v:
            src = dict(v["secret"])
            src["name"] = src.get("secretName")
            return self._source_files(ns, src, "secret", 0o644)
        if "downwardAPI" in v:
            return downward_files(pod, pod_ip, v["downwardAPI"], 0o644, self.node)
        if "projected" in v:
            mode = v["projected"].get("defaultMode", 0o644)
            files: Files = {}
            for s in v["projected"].get("sources") or []:
                if "configMap" in s:
                    src = {**s["configMap"], "defaultMode": mode}
                    files.update(self._source_files(ns, src, "configMap", mode) or {})
                elif "secret" in s:
                    src = {**s["secret"], "defaultMode": mode}
                    files.update(self._source_files(ns, src, "secret", mode) or {})
                elif "downwardAPI" in s:
                    src = {**s["downwardAPI"], "defaultMode": mode}
                    files.update(downward_files(pod, pod_ip, src, mode, self.node))
                elif "serviceAccountToken" in s:
                    files.update(self._token_file(pod, s["serviceAccountToken"], mode))
            return files
        return None

    def _source_files(self, namespace: str, src: Obj, kind: str, default_mode: int) -> Files | None:
        from kubernetes import client

        name = src.get("name")
        mode = src.get("defaultMode", default_mode)
        try:
            if kind == "configMap":
                r = self.core.read_namespaced_config_map(name, namespace, _preload_content=False)
                obj = json.loads(r.data)
                data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
                data.update(
                    {k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()}
                )
            else:
                r = self.core.read_namespaced_secret(name, namespace, _preload_content=False)
                obj = json.loads(r.data)
                data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
        except client.ApiException as e:
            if e.status == 404:
                if src.get("optional"):
                    return {}
                raise VolumeError(f'{kind} "{name}" not found') from e
            raise
        items = src.get("items")
        if not items:
            return {k: (v, mode) for k, v in data.items()}
        out = {}
        for it in items:
            if it["key"] not in data:
                if src.get("optional"):
                    continue
                raise VolumeError(f'key "{it["key"]}" not found in {kind} "{name}"')
            out[it["path"]] = (data[it["key"]], it.get("mode", mode))
        return out

    def _token_file(self, pod: Obj, src: Obj, mode: int) -> Files:
        now = time.monotonic()
        path = self.dir / "tokens" / src["path"].replace("/", "_")
        if path.exists() and now < self.token_refresh_at.get(src["path"], 0):
            return {src["path"]: (path.read_bytes(), mode)}
        md = pod["metadata"]
        exp = int(src.get("expirationSeconds") or 3600)
        spec: Obj = {
            "expirationSeconds": exp,
            "boundObjectRef": {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": md["name"],
                "uid": md["uid"],
            },
        }
        if src.get("audience"):
            spec["audiences"] = [src["audience"]]
        sa = pod["spec"].get("serviceAccountName") or "default"
        resp = self.core.create_namespaced_service_account_token(
            sa, md["namespace"], {"spec": spec}, _preload_content=False
        )
        token = json.loads(resp.data)["status"]["token"].encode()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(token)
        self.token_refresh_at[src["path"]] = now + exp * 0.8
        return {src["path"]: (token, mode)}

    # -- mounts
    def mount_script(self, pod: Obj, c: Container, hostname: str) -> Path:
        """The script that bind-mounts ``c``'s volumes, sets the hostname and execs argv."""
        vols = {v["name"]: v for v in pod["spec"].get("volumes") or []}
        lines = ["set -e", f"hostname {shlex.quote(hostname)} 2>/dev/null || true"]
        # Volume sources live under the pod's run dir; a mount over one of its ancestors
        # (e.g. an emptyDir at /tmp) would hide the sources of the mounts after it.
        for m in sorted(c.spec.get("volumeMounts") or [], key=self._hides_run_dir):
            v = vols.get(m["name"])
            if v is None:
                continue
            src = Path(v["hostPath"]["path"]) if "hostPath" in v else self.volume_dir(m["name"])
            if (
                "hostPath" in v
                and not src.exists()
                and v["hostPath"].get("type") in ("DirectoryOrCreate", None, "")
            ):
                src.mkdir(parents=True, exist_ok=True)
            if m.get("subPath"):
                src = src / m["subPath"]
                if not src.exists():
                    src.mkdir(parents=True, exist_ok=True)
            target = Path(m["mountPath"])
            self.node.mounts.acquire(target, src.is_file(), self.mount_user)
            q, t = shlex.quote(str(src)), shlex.quote(str(target))
            lines.append(f"mount --bind {q} {t}")
            if m.get("readOnly"):
                lines.append(f"mount -o remount,bind,ro {t}")
        wd = c.spec.get("workingDir")
        if wd:
            lines.append(f"mkdir -p {shlex.quote(wd)} && cd {shlex.quote(wd)}")
        lines.append('exec "$@"')
        script = self.dir / f"{c.name}.sh"
        script.write_text("\n".join(lines) + "\n")
        return script

    def _hides_run_dir(self, mount: dict[str, Any]) -> bool:
        target = Path(mount["mountPath"])
        return target == self.dir or target in self.dir.parents


def downward_files(
    pod: Obj, pod_ip: str | None, src: Obj, default_mode: int, node: NodeContext
) -> Files:
    """A downwardAPI volume's files: ``path -> (value, mode)``."""
    out = {}
    mode = src.get("defaultMode", default_mode)
    for it in src.get("items") or []:
        if "fieldRef" in it:
            val = field_ref(pod, it["fieldRef"]["fieldPath"], pod_ip, node.host_ip)
        else:
            val = resource_ref(pod, it["resourceFieldRef"], None, node)
        out[it["path"]] = (val.encode(), it.get("mode", mode))
    return out
