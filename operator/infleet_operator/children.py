"""Pure rendering: an InferenceDeployment -> the child manifests the operator applies.

No I/O here. Every manifest is a plain dict in the exact shape sent as a
server-side apply body, holding only fields the operator owns: applying the
same render twice is a no-op on the API server (resourceVersion unchanged).
Rendering is deterministic (sorted keys where order is free, stable lists).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from infleet_operator import api, generation, naming
from infleet_operator.autoscaling.spec import shed_queue_depth
from infleet_worker.config import REDIS_URL_ENV, AdaptiveBatching, ServerSpec, WorkerConfig

Obj = dict[str, Any]

GPU_RESOURCE = "nvidia.com/gpu"
HEALTH_READY = "/v2/health/ready"
HEALTH_LIVE = "/v2/health/live"
# Endpoint removal must come before the worker stops taking requests: the pod is
# marked terminating (EndpointSlices drop it), preStop sleeps, then SIGTERM starts
# the worker's own drain (server.drainSeconds) and in-flight work finishes.
PRESTOP_SLEEP_SECONDS = 3
DRAIN_SECONDS = 5.0


@dataclass(frozen=True)
class Children:
    config_map: Obj
    deployment: Obj
    service: Obj
    headless: Obj
    pdb: Obj
    config_hash: str

    def in_apply_order(self) -> list[Obj]:
        """ConfigMap first (pods mount it), then the Deployment, then what selects its pods."""
        return [self.config_map, self.deployment, self.service, self.headless, self.pdb]


def owner_reference(body: Obj) -> Obj:
    md = body["metadata"]
    return {
        "apiVersion": api.API_VERSION,
        "kind": api.KIND,
        "name": md["name"],
        "uid": md["uid"],
        "controller": True,
    }


def _meta(body: Obj, name: str) -> Obj:
    md = body["metadata"]
    return {
        "name": name,
        "namespace": md["namespace"],
        "labels": naming.labels(md["name"]),
        "ownerReferences": [owner_reference(body)],
    }


def grace_seconds(spec: api.InferenceDeploymentSpec) -> int:
    """The spec's, or longer for a generative fleet (generation.py)."""
    return generation.grace_seconds(spec, PRESTOP_SLEEP_SECONDS, DRAIN_SECONDS)


def server_spec(spec: api.InferenceDeploymentSpec) -> ServerSpec:
    grace = grace_seconds(spec)
    prestop = prestop_seconds(spec)
    # Leave at least a couple of seconds of the grace period for in-flight work.
    drain = max(0.0, min(DRAIN_SECONDS, (grace - prestop - 2) / 2))
    return ServerSpec(
        drain_seconds=drain,
        front_ends=spec.front_ends,
        shed_queue_depth=shed_queue_depth(spec.autoscaling),
        adaptive_batching=adaptive_batching(spec.autoscaling),
    )


def adaptive_batching(auto: api.AutoscalingSpec) -> AdaptiveBatching | None:
    """overload.adaptiveBatching for the worker: overloaded past the target queue per
    replica, as the simulator reads it (simulator/scenario.with_overload)."""
    a = auto.overload.adaptive_batching
    if not a.enabled:
        return None
    return AdaptiveBatching(
        max_batch_size=a.max_batch_size,
        max_queue_delay_microseconds=a.max_queue_delay_microseconds,
        queue_depth=auto.target_queue_depth_per_replica,
    )


def prestop_seconds(spec: api.InferenceDeploymentSpec) -> int:
    return min(PRESTOP_SLEEP_SECONDS, grace_seconds(spec) // 4)


def worker_config(spec: api.InferenceDeploymentSpec) -> WorkerConfig:
    return WorkerConfig(
        model=spec.model,
        engine=spec.engine,
        batching=spec.batching,
        cache=spec.cache,
        server=server_spec(spec),
    )


def worker_json(spec: api.InferenceDeploymentSpec) -> str:
    return json.dumps(worker_config(spec).to_wire(), sort_keys=True, indent=2) + "\n"


def config_hash(config_text: str) -> str:
    return hashlib.sha256(config_text.encode()).hexdigest()[:16]


def render_config_map(body: Obj, config_text: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": _meta(body, naming.config_map_name(body["metadata"]["name"])),
        "data": {naming.CONFIG_FILE: config_text},
    }


def _ports(server: ServerSpec) -> list[Obj]:
    return [
        {"name": "http", "containerPort": server.http_port, "protocol": "TCP"},
        {"name": "grpc", "containerPort": server.grpc_port, "protocol": "TCP"},
        {"name": "metrics", "containerPort": server.metrics_port, "protocol": "TCP"},
    ]


def _resources(spec: api.InferenceDeploymentSpec) -> Obj:
    requests = dict(spec.resources.requests)
    limits = dict(spec.resources.limits)
    gpus = spec.gpus_per_pod
    if gpus > 0:
        # Extended resources: requests must equal limits.
        requests[GPU_RESOURCE] = str(gpus)
        limits[GPU_RESOURCE] = str(gpus)
    out: Obj = {}
    if requests:
        out["requests"] = dict(sorted(requests.items()))
    if limits:
        out["limits"] = dict(sorted(limits.items()))
    return out


def _env(spec: api.InferenceDeploymentSpec) -> list[Obj]:
    env: list[Obj] = [
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
        {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
        {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}},
    ]
    ref = spec.cache.redis.secret_ref
    if ref is not None:
        env.append(
            {
                "name": REDIS_URL_ENV,
                "valueFrom": {"secretKeyRef": {"name": ref.name, "key": ref.key}},
            }
        )
    ours = {e["name"] for e in env}
    # User entries come last; a user entry never shadows ours (env is a map keyed by name).
    env.extend(e for e in spec.env if e.get("name") not in ours)
    return env


def _container(spec: api.InferenceDeploymentSpec, server: ServerSpec) -> Obj:
    c: Obj = {
        "name": "worker",
        "image": spec.image,
        "imagePullPolicy": spec.image_pull_policy,
        "command": ["infleet-worker", "--config", naming.CONFIG_PATH],
        "ports": _ports(server),
        "env": _env(spec),
        "volumeMounts": [
            {"name": "infleet-config", "mountPath": naming.CONFIG_DIR, "readOnly": True},
            *spec.volume_mounts,
        ],
        # Long model loads are fine: liveness only starts once the server answers.
        "startupProbe": {
            "httpGet": {"path": HEALTH_LIVE, "port": "http"},
            "periodSeconds": 2,
            "failureThreshold": 300,
        },
        "readinessProbe": {
            "httpGet": {"path": HEALTH_READY, "port": "http"},
            "periodSeconds": 1,
            "failureThreshold": 2,
        },
        "livenessProbe": {
            "httpGet": {"path": HEALTH_LIVE, "port": "http"},
            "periodSeconds": 10,
            "failureThreshold": 3,
        },
        "lifecycle": {"preStop": {"sleep": {"seconds": prestop_seconds(spec)}}},
        # A model that fails to load exits; its last log lines become the status message.
        "terminationMessagePolicy": "FallbackToLogsOnError",
    }
    for probe, fields in generation.probe_overrides(spec).items():
        c[probe].update(fields)  # a long prefill must not fail liveness
    resources = _resources(spec)
    if resources:
        c["resources"] = resources
    if prestop_seconds(spec) == 0:
        del c["lifecycle"]
    return c


def _pod_spec(body: Obj, spec: api.InferenceDeploymentSpec, server: ServerSpec) -> Obj:
    name = body["metadata"]["name"]
    pod: Obj = {
        "containers": [_container(spec, server)],
        "volumes": [
            {"name": "infleet-config", "configMap": {"name": naming.config_map_name(name)}},
            *spec.volumes,
        ],
        "terminationGracePeriodSeconds": grace_seconds(spec),
        # The worker knows nothing of Kubernetes: no API token, no service env vars.
        "automountServiceAccountToken": False,
        "enableServiceLinks": False,
    }
    if spec.node_selector:
        pod["nodeSelector"] = dict(sorted(spec.node_selector.items()))
    if spec.tolerations:
        pod["tolerations"] = [t.to_wire() for t in spec.tolerations]
    if spec.affinity:
        pod["affinity"] = spec.affinity
    if spec.priority_class_name:
        pod["priorityClassName"] = spec.priority_class_name
    if spec.service_account_name:
        pod["serviceAccountName"] = spec.service_account_name
    return pod


def render_deployment(
    body: Obj,
    spec: api.InferenceDeploymentSpec,
    config_text: str,
    *,
    include_replicas: bool,
) -> Obj:
    """The worker Deployment. ``include_replicas`` is False while autoscaling owns the count."""
    name = body["metadata"]["name"]
    server = server_spec(spec)
    dspec: Obj = {
        "selector": {"matchLabels": naming.selector_labels(name)},
        "strategy": {
            "type": "RollingUpdate",
            # No request fails during a roll: a new pod is Ready before an old one goes.
            "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1},
        },
        "revisionHistoryLimit": 3,
        "template": {
            "metadata": {
                "labels": naming.labels(name),
                "annotations": {naming.CONFIG_HASH: config_hash(config_text)},
            },
            "spec": _pod_spec(body, spec, server),
        },
    }
    if include_replicas:
        dspec = {"replicas": spec.replicas, **dspec}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _meta(body, naming.deployment_name(name)),
        "spec": dspec,
    }


def _service_ports(server: ServerSpec) -> list[Obj]:
    return [
        {"name": "http", "port": server.http_port, "targetPort": "http", "protocol": "TCP"},
        {
            "name": "grpc",
            "port": server.grpc_port,
            "targetPort": "grpc",
            "protocol": "TCP",
            "appProtocol": "kubernetes.io/h2c",
        },
        {
            "name": "metrics",
            "port": server.metrics_port,
            "targetPort": "metrics",
            "protocol": "TCP",
        },
    ]


def render_service(body: Obj, spec: api.InferenceDeploymentSpec) -> Obj:
    name = body["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(body, naming.service_name(name)),
        "spec": {
            "type": "ClusterIP",
            "selector": naming.selector_labels(name),
            "ports": _service_ports(server_spec(spec)),
        },
    }


def render_headless_service(body: Obj, spec: api.InferenceDeploymentSpec) -> Obj:
    """One DNS A record per Ready pod: gRPC clients spread their connections over them."""
    name = body["metadata"]["name"]
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _meta(body, naming.headless_service_name(name)),
        "spec": {
            "clusterIP": "None",
            "publishNotReadyAddresses": False,
            "selector": naming.selector_labels(name),
            "ports": _service_ports(server_spec(spec)),
        },
    }


def render_pdb(body: Obj) -> Obj:
    name = body["metadata"]["name"]
    return {
        "apiVersion": "policy/v1",
        "kind": "PodDisruptionBudget",
        "metadata": _meta(body, naming.pdb_name(name)),
        "spec": {
            "maxUnavailable": 1,
            "selector": {"matchLabels": naming.selector_labels(name)},
        },
    }


def render(body: Obj, spec: api.InferenceDeploymentSpec | None = None) -> Children:
    """All children of one InferenceDeployment ``body`` (metadata needs name, namespace, uid)."""
    if spec is None:
        spec = api.InferenceDeploymentSpec.model_validate(body.get("spec") or {})
    text = worker_json(spec)
    return Children(
        config_map=render_config_map(body, text),
        deployment=render_deployment(
            body, spec, text, include_replicas=not spec.autoscaling.enabled
        ),
        service=render_service(body, spec),
        headless=render_headless_service(body, spec),
        pdb=render_pdb(body),
        config_hash=config_hash(text),
    )


def endpoint(body: Obj, spec: api.InferenceDeploymentSpec) -> api.Endpoint:
    """Cluster DNS names clients use (host:port)."""
    md = body["metadata"]
    ns, server = md["namespace"], server_spec(spec)
    svc = f"{naming.service_name(md['name'])}.{ns}.svc"
    headless = f"{naming.headless_service_name(md['name'])}.{ns}.svc"
    return api.Endpoint(
        http=f"http://{svc}:{server.http_port}",
        grpc=f"{svc}:{server.grpc_port}",
        grpc_headless=f"dns:///{headless}:{server.grpc_port}",
        metrics=f"http://{svc}:{server.metrics_port}/metrics",
    )
