"""A small async Kubernetes REST client for the few calls the operator makes itself.

kopf watches and patches the InferenceDeployments with its own client; the
operator's own writes (server-side apply of children, status patches) go
through this one. Credentials come from the same place kopf takes them:
in-cluster ServiceAccount, else ``$KUBECONFIG`` / ``~/.kube/config``.

Every call names its resource through :data:`RESOURCES`, so the set of
(group, resource, verb) triples the operator can ever use is known statically
and checked against ``manifests/base/rbac.yaml`` (``tests/test_operator_rbac.py``).
"""

from __future__ import annotations

import json
import os
import ssl
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp

from infleet_operator import api

Obj = dict[str, Any]


@dataclass(frozen=True)
class ResourceInfo:
    group: str  # "" = core
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced:
            assert namespace, f"{self.plural} is namespaced"
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name:
            base += f"/{name}"
        if sub:
            base += f"/{sub}"
        return base


# Kind -> where it lives. Only these kinds are ever touched by the operator's own client.
RESOURCES: dict[str, ResourceInfo] = {
    "ConfigMap": ResourceInfo("", "v1", "configmaps"),
    "Service": ResourceInfo("", "v1", "services"),
    "Deployment": ResourceInfo("apps", "v1", "deployments"),
    "PodDisruptionBudget": ResourceInfo("policy", "v1", "poddisruptionbudgets"),
    api.KIND: ResourceInfo(api.GROUP, api.VERSION, api.PLURAL),
    "ClusterKopfPeering": ResourceInfo("kopf.dev", "v1", "clusterkopfpeerings", namespaced=False),
}


class ApiError(Exception):
    def __init__(self, status: int, body: Obj | str) -> None:
        self.status = status
        self.body = body
        msg = body.get("message", "") if isinstance(body, dict) else str(body)[:500]
        self.message = msg
        super().__init__(f"HTTP {status}: {msg}")

    @property
    def reason(self) -> str:
        return str(self.body.get("reason", "")) if isinstance(self.body, dict) else ""


class KubeApi(Protocol):
    """What the reconcile needs; :class:`Kube` implements it, tests use a recording fake."""

    async def apply(self, obj: Obj, *, manager: str, force: bool) -> Obj: ...

    async def get(self, kind: str, namespace: str | None, name: str) -> Obj | None: ...

    async def patch_status(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj: ...

    async def create(self, obj: Obj) -> Obj: ...


@dataclass
class Credentials:
    server: str
    ssl: ssl.SSLContext | bool
    token: str | None = None
    token_file: str | None = None

    def authorization(self) -> str | None:
        if self.token_file:
            try:
                with open(self.token_file) as f:
                    return f"Bearer {f.read().strip()}"
            except OSError:
                pass
        return f"Bearer {self.token}" if self.token else None


SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def load_credentials() -> Credentials:
    """In-cluster ServiceAccount when there is one, else the kubeconfig (as kopf does)."""
    from kubernetes import client, config  # imported lazily: heavy

    cfg = client.Configuration()
    in_cluster = bool(os.environ.get("KUBERNETES_SERVICE_HOST")) and os.path.exists(
        f"{SA_DIR}/token"
    )
    if in_cluster and not os.environ.get("KUBECONFIG"):
        config.load_incluster_config(client_configuration=cfg)
    else:
        config.load_kube_config(
            config_file=os.environ.get("KUBECONFIG") or None, client_configuration=cfg
        )
    ctx: ssl.SSLContext | bool
    if cfg.verify_ssl:
        ctx = ssl.create_default_context(cafile=cfg.ssl_ca_cert or None)
        if cfg.cert_file:
            ctx.load_cert_chain(cfg.cert_file, cfg.key_file)
    else:
        ctx = False
    token = cfg.get_api_key_with_prefix("authorization") or cfg.get_api_key_with_prefix(
        "BearerToken"
    )
    bearer = token.split(" ", 1)[1] if token and token.startswith("Bearer ") else token
    return Credentials(
        server=cfg.host.rstrip("/"),
        ssl=ctx,
        token=bearer,
        token_file=f"{SA_DIR}/token" if in_cluster and not os.environ.get("KUBECONFIG") else None,
    )


class Kube:
    """aiohttp-based client; one session per operator process."""

    def __init__(self, creds: Credentials, timeout: float = 30.0) -> None:
        self.creds = creds
        self.timeout = aiohttp.ClientTimeout(total=timeout)
        self._session: aiohttp.ClientSession | None = None
        self.calls = 0

    @classmethod
    def from_env(cls) -> Kube:
        return cls(load_credentials())

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _sess(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self.timeout, connector=aiohttp.TCPConnector(ssl=self.creds.ssl, limit=32)
            )
        return self._session

    async def request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str] | None = None,
        body: Obj | None = None,
        content_type: str = "application/json",
    ) -> Obj:
        headers = {"Accept": "application/json"}
        auth = self.creds.authorization()
        if auth:
            headers["Authorization"] = auth
        data = None
        if body is not None:
            headers["Content-Type"] = content_type
            data = json.dumps(body)
        self.calls += 1
        async with self._sess().request(
            method, self.creds.server + path, params=params, data=data, headers=headers
        ) as rsp:
            text = await rsp.text()
            try:
                payload: Any = json.loads(text) if text else {}
            except ValueError:
                payload = text
            if rsp.status >= 400:
                raise ApiError(rsp.status, payload)
            return payload if isinstance(payload, dict) else {}

    async def apply(self, obj: Obj, *, manager: str, force: bool) -> Obj:
        info = RESOURCES[obj["kind"]]
        md = obj["metadata"]
        params = {"fieldManager": manager}
        if force:
            params["force"] = "true"
        return await self.request(
            "PATCH",
            info.path(md.get("namespace"), md["name"]),
            params=params,
            body=obj,
            content_type="application/apply-patch+yaml",  # JSON is YAML
        )

    async def get(self, kind: str, namespace: str | None, name: str) -> Obj | None:
        try:
            return await self.request("GET", RESOURCES[kind].path(namespace, name))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def patch_status(self, kind: str, namespace: str, name: str, patch: Obj) -> Obj:
        return await self.request(
            "PATCH",
            RESOURCES[kind].path(namespace, name, "status"),
            body=patch,
            content_type="application/merge-patch+json",
        )

    async def create(self, obj: Obj) -> Obj:
        info = RESOURCES[obj["kind"]]
        return await self.request("POST", info.path(obj["metadata"].get("namespace")), body=obj)
