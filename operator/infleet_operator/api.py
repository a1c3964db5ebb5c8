"""The ``InferenceDeployment`` API (``infleet.dev/v1alpha1``) as pydantic models.

These models are the single source of truth: ``infleet crd`` renders them into
the CRD's structural schema, the operator parses objects with them, and tests
check examples against them. Data-plane sections (model, engine, batching,
cache) come from :mod:`infleet_worker.config` so the worker reads exactly what
the user wrote.
"""

from __future__ import annotations

import re
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    BeforeValidator,
    ConfigDict,
    Field,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from infleet_worker.config import (
    ENGINE_VS_BATCHING_CEL,
    GENERATION_CEL,
    BatchingSpec,
    CacheSpec,
    Device,
    EngineSpec,
    FieldError,
    ModelSpec,
    Spec,
    cel,
    check_engine_vs_batching,
    check_generation,
    gpus_per_pod,
)

GROUP = "infleet.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "InferenceDeployment"
PLURAL = "inferencedeployments"
SINGULAR = "inferencedeployment"
SHORT_NAMES = ["infd", "idep"]

DEFAULT_IMAGE = "ghcr.io/infleet/infleet-worker:0.1.0"
# A non-negative Kubernetes quantity: 4, 500m, 1.5, 16Gi, 1e3.
QUANTITY_PATTERN = (
    r"^\+?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
    r"(([KMGTPE]i)|[numkMGTPE]|([eE][-+]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$"
)
QUANTITY_RULE = "must be a quantity such as 4, 500m, 1.5 or 16Gi"


def _quantity(value: Any) -> Any:
    """Kubernetes quantities are int-or-string: ``nvidia.com/gpu: 2`` is a quantity too."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if isinstance(value, str) and (len(value) > 64 or not re.match(QUANTITY_PATTERN, value)):
        raise ValueError(QUANTITY_RULE)
    return value


Quantity = Annotated[
    str,
    BeforeValidator(_quantity),
    WithJsonSchema(
        {
            "x-kubernetes-int-or-string": True,
            "maxLength": 64,
            "x-kubernetes-validations": [
                {
                    "rule": f"type(self) == int || self.matches(r'{QUANTITY_PATTERN}')",
                    "message": QUANTITY_RULE,
                }
            ],
        }
    ),
]
GPU_RESOURCE = "nvidia.com/gpu"
# A metadata.name the API server takes for a custom resource: an RFC 1123 subdomain.
DNS_SUBDOMAIN_PATTERN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
DNS_SUBDOMAIN_RULE = (
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, "
    "'-' or '.', and must start and end with an alphanumeric character"
)


def _gpu_rules(section: str) -> list[dict[str, str]]:
    """CEL for resources.<section>['nvidia.com/gpu']: GPUs per pod come from the engine."""
    where = f"self.resources.{section}"
    has_gpu = f"has({where}) && '{GPU_RESOURCE}' in {where}"
    return [
        {
            "rule": f"!({has_gpu}) || self.engine.device != 'cpu'",
            "message": f"{GPU_RESOURCE} on engine.device cpu: drop it or use device auto/cuda",
            "fieldPath": f".resources.{section}",
        },
        {
            "rule": f"!({has_gpu}) || self.engine.device == 'cpu' || "
            f"string({where}['{GPU_RESOURCE}']) == string(self.engine.pipelineParallel)",
            "message": f"{GPU_RESOURCE} must equal engine.pipelineParallel (GPUs per pod are "
            "derived from it: leave it out)",
            "fieldPath": f".resources.{section}",
        },
    ]


def check_gpu_resources(spec: InferenceDeploymentSpec) -> None:
    """The Python side of :func:`_gpu_rules` (same messages, same field paths)."""
    for section in ("limits", "requests"):
        value = getattr(spec.resources, section).get(GPU_RESOURCE)
        if value is None:
            continue
        field = f"resources.{section}"
        rule_cpu, rule_pp = _gpu_rules(section)
        if spec.engine.device == Device.CPU:
            raise FieldError(field, rule_cpu["message"])
        if value != str(spec.engine.pipeline_parallel):
            raise FieldError(field, rule_pp["message"])


def _preserve(description: str) -> dict[str, Any]:
    """Schema for an embedded Kubernetes object we pass through unchanged."""
    return {
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": True,
        "description": description,
    }


class ResourceRequirements(Spec):
    """Container resources of each worker (GPUs are added from engine.pipelineParallel)."""

    requests: dict[str, Quantity] = Field(
        default_factory=dict, max_length=32, description="e.g. {cpu: 4, memory: 16Gi}"
    )
    limits: dict[str, Quantity] = Field(default_factory=dict, max_length=32)


class Toleration(Spec):
    key: str | None = Field(default=None, max_length=316)
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = Field(default=None, max_length=63)
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(default=None, ge=0)


class PolicyName(StrEnum):
    PREDICTIVE = "predictive"
    HPA = "hpa"
    KPA = "kpa"


class PredictiveSpec(Spec):
    enabled: bool = Field(default=True, description="Forecast load one pod start-time ahead.")
    horizon_seconds: int | None = Field(
        default=None,
        ge=1,
        le=3600,
        description="Forecast lead; unset = the pod start-to-Ready time the operator measured.",
    )
    capacity_per_replica: float | None = Field(
        default=None,
        gt=0,
        le=1_000_000,
        description="Prior for requests/s one saturated replica serves; learned from traffic "
        "when unset.",
    )
    target_utilization: float = Field(
        default=0.7,
        gt=0,
        le=1.5,
        description="Share of a replica's saturated throughput to plan for; lower keeps more "
        "headroom for load that rises while pods start.",
    )
    burst_quantile: float | None = Field(
        default=None,
        gt=0,
        lt=1,
        description="Burst-aware headroom: keep the capacity that would have absorbed this "
        "quantile (e.g. 0.99) of how fast load rose within one pod start in this fleet's own "
        "history. Unset: the fixed margin of targetUtilization only.",
    )
    max_burst_headroom: float = Field(
        default=1.0,
        ge=0,
        le=10,
        description="Cap on the burst headroom, as a share of the plan (1.0 = at most double).",
    )


class AdaptiveBatchingSpec(Spec):
    """While the queue is past targetQueueDepthPerReplica, trade latency for throughput."""

    enabled: bool = False
    max_batch_size: int = Field(
        default=128, ge=1, le=4096, description="Largest batch while overloaded."
    )
    max_queue_delay_microseconds: int = Field(
        default=20_000, ge=0, le=10_000_000, description="Batch delay while overloaded."
    )


class SheddingSpec(Spec):
    """When capacity is short, refuse the lowest priority first (fast 503 / UNAVAILABLE)."""

    enabled: bool = False
    queue_depth_per_replica: float | None = Field(
        default=None,
        gt=0,
        le=100_000,
        description="Queue per ready replica at which the lowest priority level is refused "
        "(level L >= 2 at this / (L - 1)); level 1 is never shed. Unset: twice "
        "targetQueueDepthPerReplica.",
    )


class OverloadSpec(Spec):
    """What workers do while new pods start: modelled by `infleet simulate`, enforced by
    every worker (docs/autoscaling.md)."""

    adaptive_batching: AdaptiveBatchingSpec = Field(default_factory=AdaptiveBatchingSpec)
    shedding: SheddingSpec = Field(default_factory=SheddingSpec)


class MetricsSourceSpec(Spec):
    prometheus_url: str | None = Field(
        default=None,
        pattern=r"^https?://[^\s]+$",
        max_length=2048,
        description="Query this Prometheus instead of scraping worker pods directly.",
    )
    scrape_timeout_seconds: float = Field(default=2.0, gt=0, le=30)


class AutoscalingSpec(Spec):
    """Scale the workers from their queue-depth metrics (the operator owns replicas then)."""

    model_config = cel(
        {
            "rule": "!has(self.minReplicas) || self.minReplicas <= self.maxReplicas",
            "message": "minReplicas must be <= maxReplicas",
            "fieldPath": ".minReplicas",
        }
    )

    enabled: bool = False
    policy: PolicyName = Field(
        default=PolicyName.PREDICTIVE,
        description="predictive (ours), hpa (Kubernetes HPA v2 rules) or kpa (Knative).",
    )
    min_replicas: int = Field(default=1, ge=1, le=1000)
    max_replicas: int = Field(default=10, ge=1, le=1000)
    target_queue_depth_per_replica: float = Field(
        default=8.0,
        gt=0,
        le=100_000,
        description="Queued plus in-flight requests each replica should carry (for a "
        "generative fleet: waiting plus running sequences).",
    )
    target_kv_cache_usage: float = Field(
        default=0.8,
        gt=0,
        le=1,
        description="Generative fleets: KV cache usage at which a replica counts as full; the "
        "fleet keeps at least the replicas its KV cache in use fills at this usage.",
    )
    predictive: PredictiveSpec = Field(default_factory=PredictiveSpec)
    interval_seconds: int = Field(default=15, ge=1, le=600, description="Decision period.")
    scale_up_stabilization_seconds: int = Field(default=0, ge=0, le=3600)
    scale_down_stabilization_seconds: int | None = Field(
        default=None,
        ge=0,
        le=3600,
        description="How long a lower replica count must hold before the fleet scales down. "
        "Unset: 300 s for hpa (Kubernetes' default); one forecast lead (the measured pod "
        "start) for predictive: a replica let go in a shorter dip could not be back in time, "
        "and one kept longer pays for load that would have had a new pod in time.",
    )
    metrics: MetricsSourceSpec = Field(default_factory=MetricsSourceSpec)
    overload: OverloadSpec = Field(default_factory=OverloadSpec)

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise FieldError(
                "minReplicas",
                f"minReplicas must be <= maxReplicas ({self.min_replicas} > {self.max_replicas})",
            )
        return self


class InferenceDeploymentSpec(Spec):
    """What the user wants: a model served by a fleet of workers."""

    model_config = cel(
        *ENGINE_VS_BATCHING_CEL,
        *GENERATION_CEL,
        *_gpu_rules("limits"),
        *_gpu_rules("requests"),
    )

    model: ModelSpec
    engine: EngineSpec = Field(default_factory=EngineSpec)
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    # No `minimum` in the schema: the scale subresource already refuses a negative
    # spec.replicas ("should be a non-negative integer"); both would report it twice.
    replicas: int = Field(
        default=1,
        le=1000,
        description="Worker count when autoscaling is off (also `kubectl scale`).",
    )
    autoscaling: AutoscalingSpec = Field(default_factory=AutoscalingSpec)
    image: str = Field(default=DEFAULT_IMAGE, min_length=1, max_length=512)
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] = "IfNotPresent"
    resources: ResourceRequirements = Field(default_factory=ResourceRequirements)
    node_selector: dict[str, str] = Field(default_factory=dict)
    tolerations: list[Toleration] = Field(default_factory=list, max_length=32)
    affinity: dict[str, Any] | None = Field(
        default=None, json_schema_extra=_preserve("Pod affinity, as in a PodSpec.")
    )
    priority_class_name: str | None = Field(default=None, max_length=253)
    service_account_name: str | None = Field(default=None, max_length=253)
    env: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=128,
        json_schema_extra={
            "items": _preserve("An EnvVar, as in a container spec."),
            "description": "Extra environment variables for the workers.",
        },
    )
    volumes: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={
            "items": _preserve("A Volume, as in a PodSpec (PVC, ConfigMap, ...)."),
            "description": "Volumes for the worker pods, e.g. a PVC holding file:// models.",
        },
    )
    volume_mounts: list[dict[str, Any]] = Field(
        default_factory=list,
        max_length=64,
        json_schema_extra={
            "items": _preserve("A VolumeMount, as in a container spec."),
            "description": "Where the volumes appear in the worker container.",
        },
    )
    front_ends: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Front-end processes per worker pod (HTTP and gRPC on shared ports, "
        "decode, cache); one engine core batches for all of them. 0 = one per CPU the pod "
        "may use (its CPU limit), less one, at most 8.",
    )
    termination_grace_period_seconds: int = Field(
        default=60, ge=1, le=3600, description="Time a worker gets to drain on scale-down."
    )

    @field_validator("replicas")
    @classmethod
    def _replicas(cls, value: int) -> int:
        if value < 0:
            raise ValueError(f"Invalid value: {value}: should be a non-negative integer")
        return value

    @model_validator(mode="after")
    def _cross_field(self) -> InferenceDeploymentSpec:
        check_engine_vs_batching(self.engine, self.batching)
        check_generation(self.model, self.engine)
        check_gpu_resources(self)
        mounted = {m.get("name") for m in self.volume_mounts}
        declared = {v.get("name") for v in self.volumes}
        missing = sorted(str(n) for n in mounted - declared)
        if missing:
            raise ValueError(f"volumeMounts name volumes that are not declared: {missing}")
        return self

    @property
    def gpus_per_pod(self) -> int:
        return gpus_per_pod(self.engine)


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(Spec):
    type: str
    status: ConditionStatus
    reason: str = ""
    message: str = ""
    last_transition_time: str | None = None
    observed_generation: int | None = None


class ScaleEvent(Spec):
    time: str
    from_replicas: int
    to_replicas: int
    reason: str


class AutoscalerStatus(Spec):
    policy: str | None = None
    last_decision: str | None = None
    reason: str | None = None
    desired_replicas: int | None = None
    forecast: float | None = Field(default=None, description="Forecast arrival rate (req/s).")
    observed_arrival_rate: float | None = None
    queue_depth: float | None = None
    lead_seconds: float | None = Field(
        default=None, description="Forecast horizon in use (measured pod start-to-Ready)."
    )
    last_scale_time: str | None = None
    history: list[ScaleEvent] = Field(default_factory=list, max_length=20)


class Endpoint(Spec):
    http: str | None = None
    grpc: str | None = None
    grpc_headless: str | None = None
    metrics: str | None = None


class GenerationStatus(Spec):
    kv_capacity_tokens: int | None = Field(
        default=None, description="Tokens one replica's KV cache holds (blocks x block size)."
    )
    context_length: int | None = Field(
        default=None, description="Context length served (prompt + output), in tokens."
    )


class InferenceDeploymentStatus(Spec):
    observed_generation: int | None = None
    conditions: list[Condition] = Field(default_factory=list)
    replicas: int = 0
    ready_replicas: int = 0
    desired_replicas: int | None = None
    selector: str | None = Field(default=None, description="Label selector (scale subresource).")
    endpoint: Endpoint | None = None
    gpus_per_pod: int | None = None
    pod_start_seconds: float | None = Field(
        default=None, description="Measured pod create-to-Ready time (autoscaler lead)."
    )
    generation: GenerationStatus | None = Field(
        default=None, description="A generative fleet's capacity, as its pods report it."
    )
    autoscaler: AutoscalerStatus | None = None


class InferenceDeployment(Spec):
    """A whole object, as read from the API server or a manifest."""

    model_config = ConfigDict(extra="ignore")

    api_version: Literal["infleet.dev/v1alpha1"] = "infleet.dev/v1alpha1"
    kind: Literal["InferenceDeployment"] = "InferenceDeployment"
    metadata: dict[str, Any] = Field(default_factory=dict)
    spec: InferenceDeploymentSpec
    status: InferenceDeploymentStatus | None = None

    @field_validator("metadata")
    @classmethod
    def _name(cls, metadata: dict[str, Any]) -> dict[str, Any]:
        name = metadata.get("name")
        if name is not None and (
            not isinstance(name, str)
            or len(name) > 253
            or not re.match(DNS_SUBDOMAIN_PATTERN, name)
        ):
            raise FieldError("name", DNS_SUBDOMAIN_RULE)
        return metadata
