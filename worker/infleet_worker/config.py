"""Data-plane configuration: the knobs a worker needs, torch-free and Kubernetes-free.

These pydantic models are the single source of truth for both sides:
the worker loads them from the JSON file the operator mounts, and the operator
composes them into the ``InferenceDeployment`` spec (and so into the CRD schema).

Field names are snake_case in Python and camelCase on the wire (YAML / JSON),
as Kubernetes APIs are. Cross-field rules carry a pydantic validator for
Python callers and the same rule as CEL (``x-kubernetes-validations``) for the
API server, side by side so they cannot drift apart unnoticed.
"""

from __future__ import annotations

import itertools
import json
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, model_validator
from pydantic.alias_generators import to_camel

# Triton/KServe datatypes the worker speaks.
Datatype = Literal[
    "BOOL",
    "UINT8",
    "UINT16",
    "UINT32",
    "UINT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "FP16",
    "FP32",
    "FP64",
    "BF16",
    "BYTES",
]

MODEL_NAME_PATTERN = r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$"
MODEL_VERSION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$"
# builtin://name | file:///absolute/path | python://package.module:factory
MODEL_SOURCE_PATTERN = (
    r"^(builtin://[a-z0-9][a-z0-9-]*"
    r"|file:///[^\s]+"
    r"|python://[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*)$"
)
REDIS_URL_PATTERN = r"^rediss?://[^\s]+$"
# The operator turns cache.redis.secretRef into this env var on the worker pods.
REDIS_URL_ENV = "INFLEET_REDIS_URL"


CelRule = dict[str, str]


def cel(*rules: CelRule) -> ConfigDict:
    """Model config carrying CEL rules for the CRD schema (merged with the parent's config)."""
    validations: list[JsonValue] = [dict(rule) for rule in rules]
    return ConfigDict(json_schema_extra={"x-kubernetes-validations": validations})


class Spec(BaseModel):
    """Base for every wire model: camelCase aliases, unknown fields rejected."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        populate_by_name=True,
        extra="forbid",
        validate_default=True,
    )

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON-able dict, as stored in Kubernetes or the config file."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)


class TensorSpec(Spec):
    """One input or output of a model signature. ``-1`` in ``shape`` is a free dimension."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
    datatype: Datatype
    shape: list[int] = Field(
        default_factory=list,
        max_length=8,
        description="Per-item shape without the batch dimension; -1 marks a free dimension.",
    )

    @model_validator(mode="after")
    def _dims(self) -> TensorSpec:
        for dim in self.shape:
            if dim < -1 or dim == 0:
                raise ValueError(f"shape dimensions must be positive or -1, got {dim}")
        return self


class ModelSpec(Spec):
    """Which model a worker serves, and where it comes from."""

    name: str = Field(
        pattern=MODEL_NAME_PATTERN,
        max_length=63,
        description="Model name clients use in /v2/models/{name}.",
    )
    version: str = Field(
        default="1",
        pattern=MODEL_VERSION_PATTERN,
        max_length=63,
        description="Model version; part of every cache key, so a new version never serves "
        "stale outputs.",
    )
    source: str = Field(
        pattern=MODEL_SOURCE_PATTERN,
        max_length=1024,
        description="builtin://<name> (encoder-base, mlp, minilm, synthetic), "
        "file:///path/model.pt (TorchScript or torch.export), or "
        "python://package.module:factory.",
    )
    parameters: dict[str, str] = Field(
        default_factory=dict,
        description="Model-specific string parameters (e.g. the synthetic model's batch "
        "time curve: baseMs, perItemMs).",
    )
    inputs: list[TensorSpec] | None = Field(
        default=None, max_length=64, description="Optional signature override."
    )
    outputs: list[TensorSpec] | None = Field(
        default=None, max_length=64, description="Optional signature override."
    )

    @property
    def scheme(self) -> str:
        return self.source.split("://", 1)[0]


class Device(StrEnum):
    AUTO = "auto"
    CUDA = "cuda"
    CPU = "cpu"


class Precision(StrEnum):
    """How the engine stores and computes the model (docs/engine.md, "Precision")."""

    FP32 = "fp32"
    FP16 = "fp16"
    BF16 = "bf16"
    INT8 = "int8"  # W8A8: int8 weights and dynamic per-token int8 activations
    INT8_WEIGHT_ONLY = "int8-weight-only"  # int8 weights, bf16 activations
    FP8 = "fp8"  # e4m3 weights and activations; GPUs of compute capability >= 8.9


class EngineSpec(Spec):
    """How the torch engine runs the model."""

    model_config = cel(
        {
            "rule": "!has(self.batchBuckets) || self.batchBuckets.all(b, b >= 1)",
            "message": "batchBuckets entries must be >= 1",
            "fieldPath": ".batchBuckets",
        },
        {
            "rule": "!has(self.batchBuckets) || size(self.batchBuckets) < 2 || "
            "self.batchBuckets.all(b, self.batchBuckets.filter(x, x == b).size() == 1)",
            "message": "batchBuckets must not repeat a size",
            "fieldPath": ".batchBuckets",
        },
    )

    device: Device = Field(
        default=Device.AUTO, description="auto uses CUDA when a GPU is visible, else CPU."
    )
    precision: Precision = Field(
        default=Precision.FP32,
        description="fp16/bf16 cast weights and activations. int8: int8 weights and "
        "dynamic per-token int8 activations on int8 tensor cores (W8A8, for speed). "
        "int8-weight-only: int8 weights, bf16 activations (saves memory, not time). "
        "fp8: e4m3 weights and activations on fp8 tensor cores (GPUs of compute "
        "capability >= 8.9 only; refused elsewhere).",
    )
    pipeline_parallel: int = Field(
        default=1,
        ge=1,
        le=8,
        description="Split the model into this many stages, one per GPU of the pod. "
        "GPUs per pod are derived from it.",
    )
    micro_batches: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Micro-batches per batch flowing through the pipeline stages.",
    )
    cuda_graphs: bool = Field(
        default=True,
        description="Capture CUDA graphs for each batch bucket at start-up (GPU only).",
    )
    batch_buckets: list[int] = Field(
        default_factory=list,
        max_length=32,
        description="Padded batch sizes to capture graphs for; empty = powers of two up to "
        "batching.maxBatchSize.",
    )
    warmup: bool = Field(default=True, description="Run every bucket once before Ready.")

    @model_validator(mode="after")
    def _buckets_ascending(self) -> EngineSpec:
        buckets = self.batch_buckets
        if any(b < 1 for b in buckets):
            raise ValueError("batchBuckets entries must be >= 1")
        if any(a >= b for a, b in itertools.pairwise(buckets)):
            raise ValueError("batchBuckets must be strictly ascending")
        return self


class BatchingSpec(Spec):
    """The dynamic batcher in front of the engine."""

    model_config = cel(
        {
            "rule": "!has(self.defaultPriorityLevel) || !has(self.priorityLevels) || "
            "self.defaultPriorityLevel <= self.priorityLevels",
            "message": "defaultPriorityLevel must be <= priorityLevels",
            "fieldPath": ".defaultPriorityLevel",
        }
    )

    max_batch_size: int = Field(default=32, ge=1, le=4096, description="Largest merged batch.")
    max_queue_delay_microseconds: int = Field(
        default=2000,
        ge=0,
        le=10_000_000,
        description="How long the first request of a batch may wait for company.",
    )
    max_queue_size: int = Field(
        default=1024,
        ge=1,
        le=1_000_000,
        description="Requests queued beyond this are refused at once (HTTP 503 / gRPC "
        "UNAVAILABLE).",
    )
    priority_levels: int = Field(
        default=1, ge=1, le=16, description="Priority levels; 1 is the highest."
    )
    default_priority_level: int = Field(
        default=1, ge=1, le=16, description="Level for requests that name none."
    )
    default_timeout_microseconds: int = Field(
        default=30_000_000,
        ge=0,
        le=3_600_000_000,
        description="Queue timeout for requests that set none; 0 = wait as long as needed.",
    )

    @model_validator(mode="after")
    def _priority(self) -> BatchingSpec:
        if self.default_priority_level > self.priority_levels:
            raise ValueError("defaultPriorityLevel must be <= priorityLevels")
        return self


class CacheMode(StrEnum):
    OFF = "off"
    OUTPUT = "output"
    EMBEDDING = "embedding"


class SecretKeyRef(Spec):
    name: str = Field(min_length=1, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$")
    key: str = Field(min_length=1, max_length=253, pattern=r"^[-._a-zA-Z0-9]+$")


class RedisSpec(Spec):
    """Where the shared cache lives: url or secretRef (or neither, with cache off)."""

    model_config = cel(
        {
            "rule": "!(has(self.url) && has(self.secretRef))",
            "message": "set only one of redis.url and redis.secretRef",
        }
    )

    url: str | None = Field(
        default=None,
        pattern=REDIS_URL_PATTERN,
        max_length=2048,
        description="redis://[user:password@]host:port/db or rediss:// for TLS.",
    )
    secret_ref: SecretKeyRef | None = Field(
        default=None, description="A Secret key holding the URL (keeps passwords out of Git)."
    )
    timeout_milliseconds: int = Field(
        default=50, ge=1, le=10_000, description="Per-call timeout; slower = miss."
    )

    @model_validator(mode="after")
    def _one_source(self) -> RedisSpec:
        if self.url is not None and self.secret_ref is not None:
            raise ValueError("set only one of redis.url and redis.secretRef")
        return self


class CacheSpec(Spec):
    """Shared Redis output / embedding cache."""

    model_config = cel(
        {
            "rule": "!has(self.mode) || self.mode == 'off' || "
            "(has(self.redis) && (has(self.redis.url) || has(self.redis.secretRef)))",
            "message": "cache.mode is not off: set cache.redis.url or cache.redis.secretRef",
            "fieldPath": ".redis",
        }
    )

    mode: CacheMode = Field(
        default=CacheMode.OFF,
        description="output: whole responses; embedding: one entry per input item.",
    )
    ttl_seconds: int = Field(default=3600, ge=1, le=2_592_000, description="Entry lifetime.")
    max_value_bytes: int = Field(
        default=1_048_576, ge=64, le=67_108_864, description="Larger results are not cached."
    )
    namespace: str = Field(
        default="infleet",
        pattern=r"^[A-Za-z0-9:._-]{1,64}$",
        description="Key prefix, so several fleets can share one Redis.",
    )
    redis: RedisSpec = Field(default_factory=RedisSpec)

    @model_validator(mode="after")
    def _needs_redis(self) -> CacheSpec:
        if self.mode != CacheMode.OFF and self.redis.url is None and self.redis.secret_ref is None:
            raise ValueError("cache.mode is not off: set cache.redis.url or cache.redis.secretRef")
        return self


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class ServerSpec(Spec):
    """Process-level settings of one worker (set by the operator, not by users)."""

    host: str = "0.0.0.0"
    http_port: int = Field(default=8000, ge=0, le=65535)
    grpc_port: int = Field(default=8001, ge=0, le=65535)
    metrics_port: int = Field(default=8002, ge=0, le=65535)
    drain_seconds: float = Field(
        default=5.0,
        ge=0,
        le=600,
        description="After SIGTERM: Ready goes false at once, requests are still taken this "
        "long (endpoint removal lags the signal), then in-flight work finishes.",
    )
    max_request_bytes: int = Field(default=64 * 1024 * 1024, ge=1024)
    engine_process: bool = Field(
        default=True,
        description="Run the model in a child process (engine/process.py) so it never "
        "queues for the GIL behind the event loop; false runs it in a thread.",
    )
    log_format: LogFormat = LogFormat.TEXT
    log_level: Literal["debug", "info", "warning", "error"] = "info"


class WorkerConfig(Spec):
    """Everything one worker process needs; the operator mounts it as JSON."""

    model: ModelSpec
    engine: EngineSpec = Field(default_factory=EngineSpec)
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    cache: CacheSpec = Field(default_factory=CacheSpec)
    server: ServerSpec = Field(default_factory=ServerSpec)

    @model_validator(mode="after")
    def _cross_field(self) -> WorkerConfig:
        check_engine_vs_batching(self.engine, self.batching)
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> WorkerConfig:
        return cls.model_validate(json.loads(Path(path).read_text()))


def check_engine_vs_batching(engine: EngineSpec, batching: BatchingSpec) -> None:
    """Rules that span engine and batching (also expressed as CEL on the CRD spec)."""
    if engine.micro_batches > batching.max_batch_size:
        raise ValueError(
            f"engine.microBatches ({engine.micro_batches}) must be <= "
            f"batching.maxBatchSize ({batching.max_batch_size})"
        )
    if engine.batch_buckets and engine.batch_buckets[-1] > batching.max_batch_size:
        raise ValueError(
            f"engine.batchBuckets ({engine.batch_buckets[-1]}) must not exceed "
            f"batching.maxBatchSize ({batching.max_batch_size})"
        )


# The same two rules for the API server, attached at the level that holds both fields.
# (Rules on objects that default to {} guard with has(): the API server checks each
# rule against the schema's own default value, where nested defaults are not filled.)
ENGINE_VS_BATCHING_CEL: list[CelRule] = [
    {
        "rule": "self.engine.microBatches <= self.batching.maxBatchSize",
        "message": "engine.microBatches must be <= batching.maxBatchSize",
        "fieldPath": ".engine.microBatches",
    },
    {
        "rule": "size(self.engine.batchBuckets) == 0 || "
        "self.engine.batchBuckets.all(b, b <= self.batching.maxBatchSize)",
        "message": "engine.batchBuckets must not exceed batching.maxBatchSize",
        "fieldPath": ".engine.batchBuckets",
    },
]


def effective_batch_buckets(engine: EngineSpec, batching: BatchingSpec) -> list[int]:
    """Buckets to pad to: the configured ones, else powers of two up to maxBatchSize."""
    if engine.batch_buckets:
        return list(engine.batch_buckets)
    buckets, size = [], 1
    while size < batching.max_batch_size:
        buckets.append(size)
        size *= 2
    buckets.append(batching.max_batch_size)
    return buckets


def gpus_per_pod(engine: EngineSpec) -> int:
    """GPUs a worker pod requests: one per pipeline stage, none on CPU."""
    return 0 if engine.device == Device.CPU else engine.pipeline_parallel
