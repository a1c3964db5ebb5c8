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
import re
from enum import StrEnum
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, field_validator, model_validator
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

# What MODEL_NAME_PATTERN / MODEL_SOURCE_PATTERN allow, in words (the API server and
# pydantic both say these instead of the regular expression).
MODEL_NAME_RULE = (
    "must be 1-63 lowercase letters, digits, '.', '_' or '-', starting and ending with a "
    "letter or digit"
)
MODEL_SOURCE_RULE = (
    "must be builtin://NAME, file:///ABSOLUTE/PATH or python://package.module:factory"
)


class FieldError(ValueError):
    """A cross-field rule broken at ``field``: a dotted camelCase path below the model that
    raises it, the same path its CEL rule's ``fieldPath`` names, so ``infleet validate``
    and the API server point at the same field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def matches_rule(pattern: str, message: str) -> dict[str, Any]:
    """A string field's CEL check with a message in words (instead of ``pattern``).

    A CEL raw string holds the RE2 pattern as is (none of ours contains a quote).
    """
    assert "'" not in pattern
    return {
        "x-kubernetes-validations": [{"rule": f"self.matches(r'{pattern}')", "message": message}]
    }


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


class DomainSpec(Spec):
    """The values a tensor's elements may take (the worker refuses others with 400)."""

    model_config = cel(
        {
            "rule": "!has(self.min) || !has(self.max) || self.min <= self.max",
            "message": "domain min must be <= max",
            "fieldPath": ".min",
        }
    )

    min: float | None = Field(default=None, description="Smallest allowed value (inclusive).")
    max: float | None = Field(
        default=None, description="Largest allowed value (inclusive): vocab-1 for token ids."
    )
    values: list[float] | None = Field(
        default=None,
        min_length=1,
        max_length=256,
        description="The allowed values, e.g. [0, 1] for an attention mask.",
    )
    finite: bool | None = Field(
        default=None, description="Floating-point only: refuse NaN and Inf (outputs: fail the row)."
    )
    max_bytes: int | None = Field(
        default=None, ge=1, description="BYTES only: the longest element, in bytes."
    )

    @model_validator(mode="after")
    def _bounds(self) -> DomainSpec:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise FieldError("min", f"domain min must be <= max ({self.min:g} > {self.max:g})")
        return self


FLOAT_DATATYPES = ("FP16", "FP32", "FP64", "BF16")


class TensorSpec(Spec):
    """One input or output of a model signature. ``-1`` in ``shape`` is a free dimension."""

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z_][A-Za-z0-9_.:-]*$")
    datatype: Datatype
    shape: list[int] = Field(
        default_factory=list,
        max_length=8,
        description="Per-item shape without the batch dimension; -1 marks a free dimension.",
    )

    domain: DomainSpec | None = Field(
        default=None, description="Allowed values: min/max (inclusive), values, finite, maxBytes."
    )

    @model_validator(mode="after")
    def _dims(self) -> TensorSpec:
        for dim in self.shape:
            if dim < -1 or dim == 0:
                raise ValueError(f"shape dimensions must be positive or -1, got {dim}")
        d = self.domain
        if d is not None:
            numeric = d.min is not None or d.max is not None or d.values is not None
            if self.datatype == "BYTES" and (numeric or d.finite):
                raise ValueError("domain: BYTES tensors take only maxBytes")
            if self.datatype != "BYTES" and d.max_bytes is not None:
                raise ValueError(f"domain: maxBytes applies to BYTES tensors, not {self.datatype}")
            if d.finite and self.datatype not in FLOAT_DATATYPES:
                raise ValueError(f"domain: finite applies to float tensors, not {self.datatype}")
        return self


class ModelTask(StrEnum):
    """What a model does: embed and classify run the single-pass worker (one forward
    per request, dynamic batching); generate runs the generation engine."""

    EMBED = "embed"
    CLASSIFY = "classify"
    GENERATE = "generate"


# Sources that may hold a generative model: builtin://llama, and a file:// directory
# (a Hugging Face *ForCausalLM checkpoint; the worker reads its config.json).
GENERATIVE_BUILTINS = ("builtin://llama",)


class ModelSpec(Spec):
    """Which model a worker serves, and where it comes from."""

    name: str = Field(
        max_length=63,
        description="Model name clients use in /v2/models/{name}.",
        json_schema_extra=matches_rule(MODEL_NAME_PATTERN, MODEL_NAME_RULE),
    )
    version: str = Field(
        default="1",
        pattern=MODEL_VERSION_PATTERN,
        max_length=63,
        description="Model version; part of every cache key, so a new version never serves "
        "stale outputs.",
    )
    source: str = Field(
        max_length=1024,
        json_schema_extra=matches_rule(MODEL_SOURCE_PATTERN, MODEL_SOURCE_RULE),
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
    task: ModelTask | None = Field(
        default=None,
        description="embed, classify or generate. Left out: generate for builtin://llama "
        "and for a file:// directory whose config.json names a *ForCausalLM architecture, "
        "embed otherwise.",
    )

    @property
    def may_generate(self) -> bool:
        """What the API can tell without reading files: task generate, or no task and a
        source that may hold a generative model (the CEL rules say the same)."""
        if self.task is not None:
            return self.task == ModelTask.GENERATE
        return self.source in GENERATIVE_BUILTINS or self.source.startswith("file://")

    @field_validator("name")
    @classmethod
    def _name_rule(cls, value: str) -> str:
        if not re.fullmatch(MODEL_NAME_PATTERN, value):
            raise ValueError(MODEL_NAME_RULE)
        return value

    @field_validator("source")
    @classmethod
    def _source_rule(cls, value: str) -> str:
        if not re.fullmatch(MODEL_SOURCE_PATTERN, value):
            raise ValueError(MODEL_SOURCE_RULE)
        return value

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


class KvCacheSpec(Spec):
    """The generation engine's paged KV cache (docs/generation.md)."""

    block_size: int = Field(default=16, ge=1, le=256, description="Tokens per KV block.")
    memory_fraction: float = Field(
        default=0.9,
        gt=0,
        le=1,
        description="Share of the device memory left after the weights (GPU; on CPU of a "
        "quarter of physical memory) given to the KV cache.",
    )
    prefix_caching: bool = Field(
        default=True, description="Share full blocks of equal prefixes across sequences."
    )
    blocks: int | None = Field(
        default=None, ge=1, le=10_000_000, description="Pool size in blocks (else from memory)."
    )


class SpeculativeSpec(Spec):
    """Speculative decoding: a draft proposes numTokens tokens, the target verifies them
    in one step. Greedy output is unchanged; sampled output keeps the target's
    distribution."""

    model_config = cel(
        {
            "rule": "has(self.source) != has(self.targetLayers)",
            "message": "set exactly one of speculative.source and speculative.targetLayers",
            "fieldPath": ".source",
        },
        {
            "rule": "!has(self.parameters) || size(self.parameters) == 0 || has(self.source)",
            "message": "speculative.parameters apply to a speculative.source draft only",
            "fieldPath": ".parameters",
        },
    )

    source: str | None = Field(
        default=None,
        max_length=1024,
        description="The draft model: builtin://llama (sizes in parameters) or a file:// "
        "checkpoint, with the target's tokenizer.",
        json_schema_extra=matches_rule(
            r"^(builtin://llama|file:///[^\s]+)$", "must be builtin://llama or file:///PATH"
        ),
    )
    parameters: dict[str, str] = Field(
        default_factory=dict, description="builtin://llama draft sizes (layers, seed, ...)."
    )
    target_layers: int | None = Field(
        default=None,
        ge=1,
        le=256,
        description="Instead of a source: a draft made of the target's first N layers (with "
        "its embedding, final norm and head).",
    )
    num_tokens: int = Field(
        default=4, ge=1, le=16, description="Draft tokens per step, at most (k)."
    )
    adaptive: bool = Field(
        default=True,
        description="Pick k in 0..numTokens per step from the measured acceptance rate and "
        "timings (a draft that rarely agrees then idles); false keeps k = numTokens.",
    )

    @field_validator("source")
    @classmethod
    def _source_rule(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"builtin://llama|file:///\S+", value):
            raise ValueError("must be builtin://llama or file:///PATH")
        return value

    @model_validator(mode="after")
    def _one_draft(self) -> SpeculativeSpec:
        if (self.source is None) == (self.target_layers is None):
            raise FieldError(
                "source", "set exactly one of speculative.source and speculative.targetLayers"
            )
        if self.parameters and self.source is None:
            raise FieldError(
                "parameters", "speculative.parameters apply to a speculative.source draft only"
            )
        return self


class GenerationSpec(Spec):
    """Limits of the generation engine."""

    model_config = cel(
        {
            "rule": "!has(self.maxTokens) || !has(self.maxContextTokens) || "
            "self.maxTokens < self.maxContextTokens",
            "message": "generation.maxTokens must be < generation.maxContextTokens",
            "fieldPath": ".maxTokens",
        }
    )

    max_context_tokens: int | None = Field(
        default=None,
        ge=2,
        le=1_048_576,
        description="Context served (prompt + output), at most the model's; default the model's.",
    )
    max_tokens: int | None = Field(
        default=None,
        ge=1,
        le=1_048_576,
        description="Most tokens one request may generate (a larger max_tokens is clipped); "
        "default what the context leaves. The operator sizes the pods' "
        "terminationGracePeriodSeconds from it.",
    )
    max_running_sequences: int | None = Field(
        default=None,
        ge=1,
        le=4096,
        description="Sequences decoded together; default batching.maxBatchSize.",
    )
    max_batched_tokens: int = Field(
        default=512, ge=1, le=1_048_576, description="Token budget of one engine step."
    )
    seconds_per_token: float = Field(
        default=0.05,
        gt=0,
        le=10,
        description="Inter-token latency budget used to size terminationGracePeriodSeconds "
        "(maxTokens x this + drain): a draining worker finishes its running sequences.",
    )

    @model_validator(mode="after")
    def _max_tokens(self) -> GenerationSpec:
        ctx, out = self.max_context_tokens, self.max_tokens
        if ctx is not None and out is not None and out >= ctx:
            raise FieldError(
                "maxTokens",
                f"generation.maxTokens must be < generation.maxContextTokens ({out} >= {ctx})",
            )
        return self


class EngineSpec(Spec):
    """How the torch engine runs the model."""

    model_config = cel(
        {
            "rule": "!has(self.batchBuckets) || self.batchBuckets.all(b, b >= 1)",
            "message": "batchBuckets entries must be >= 1",
            "fieldPath": ".batchBuckets",
        },
        {
            # isSorted() allows repeats; the filter refuses them: strictly ascending.
            "rule": "!has(self.batchBuckets) || (self.batchBuckets.isSorted() && "
            "self.batchBuckets.all(b, self.batchBuckets.filter(x, x == b).size() == 1))",
            "message": "batchBuckets must be strictly ascending",
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
    kv_cache: KvCacheSpec | None = Field(
        default=None, description="Generation only: the paged KV cache."
    )
    speculative: SpeculativeSpec | None = Field(
        default=None, description="Generation only: speculative decoding with a draft model."
    )
    generation: GenerationSpec | None = Field(
        default=None, description="Generation only: context, output and batch limits."
    )

    @model_validator(mode="after")
    def _buckets_ascending(self) -> EngineSpec:
        buckets = self.batch_buckets
        if any(b < 1 for b in buckets):
            raise FieldError("batchBuckets", "batchBuckets entries must be >= 1")
        if any(a >= b for a, b in itertools.pairwise(buckets)):
            raise FieldError("batchBuckets", "batchBuckets must be strictly ascending")
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
            raise FieldError(
                "defaultPriorityLevel", "defaultPriorityLevel must be <= priorityLevels"
            )
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
            raise FieldError(
                "redis", "cache.mode is not off: set cache.redis.url or cache.redis.secretRef"
            )
        return self


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class AdaptiveBatching(Spec):
    """The spec's autoscaling.overload.adaptiveBatching for one worker (the operator
    sets it): while more than ``queueDepth`` requests wait, batches of up to
    ``maxBatchSize`` rows after up to ``maxQueueDelayMicroseconds``. The engine is
    built and warmed for that size; clients' requests stay bounded by
    batching.maxBatchSize."""

    max_batch_size: int = Field(ge=1, le=4096)
    max_queue_delay_microseconds: int = Field(ge=0, le=10_000_000)
    queue_depth: float = Field(gt=0)


class Transport(StrEnum):
    AUTO = "auto"  # native when built, python otherwise
    NATIVE = "native"  # the compiled transport (worker/native); an error when not built
    PYTHON = "python"  # aiohttp and grpc.aio


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
        description="The pod layout: front-end processes (HTTP, gRPC, cache) and one engine "
        "core process (batcher, model, device); false runs everything in one process with "
        "the model on a thread (development).",
    )
    front_ends: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Front-end processes sharing the ports; 0 = one per CPU the pod may use, "
        "less one for the engine core, at most 8.",
    )
    overlap_batches: bool | None = Field(
        default=None,
        description="Run batches on a thread of the engine core while its loop keeps "
        "reading and answering requests; default: on when the engine runs on a GPU.",
    )
    adaptive_batching: AdaptiveBatching | None = Field(
        default=None, description="Larger, later batches while overloaded; None: off."
    )
    shed_queue_depth: float | None = Field(
        default=None,
        gt=0,
        description="Priority shedding (the spec's autoscaling.overload.shedding): while "
        "this many requests wait in the worker, priority level 2 is refused at once (level "
        "L at this / (L - 1)); level 1 never. None: no shedding.",
    )
    transport: Transport = Field(
        default=Transport.AUTO,
        description="HTTP and gRPC transport: native (sockets, HTTP/1.1, HTTP/2 and gRPC "
        "framing compiled, in Rust), python (aiohttp, grpcio), or auto (native when built).",
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
        check_generation(self.model, self.engine)
        return self

    @classmethod
    def from_file(cls, path: str | Path) -> WorkerConfig:
        return cls.model_validate(json.loads(Path(path).read_text()))

    @property
    def engine_max_batch_size(self) -> int:
        """The batch the engine is built and warmed for: the batcher's, or the larger
        one adaptive batching forms while the worker is overloaded."""
        adaptive = self.server.adaptive_batching
        return max(self.batching.max_batch_size, adaptive.max_batch_size if adaptive else 0)


def check_engine_vs_batching(engine: EngineSpec, batching: BatchingSpec) -> None:
    """Rules that span engine and batching (also expressed as CEL on the CRD spec)."""
    if engine.micro_batches > batching.max_batch_size:
        raise FieldError(
            "engine.microBatches",
            f"engine.microBatches must be <= batching.maxBatchSize ({engine.micro_batches} > "
            f"{batching.max_batch_size})",
        )
    if engine.batch_buckets and engine.batch_buckets[-1] > batching.max_batch_size:
        raise FieldError(
            "engine.batchBuckets",
            f"engine.batchBuckets must not exceed batching.maxBatchSize "
            f"({engine.batch_buckets[-1]} > {batching.max_batch_size})",
        )


# The same two rules for the API server, attached at the level that holds both fields.
# (Rules on objects that default to {} guard with has(): the API server checks each
# rule against the schema's own default value, where nested defaults are not filled.
# A maxBatchSize below 1 is already refused by its own bound: these rules stay quiet
# then, so one mistake gives one error.)
ENGINE_VS_BATCHING_CEL: list[CelRule] = [
    {
        "rule": "self.batching.maxBatchSize < 1 || "
        "self.engine.microBatches <= self.batching.maxBatchSize",
        "message": "engine.microBatches must be <= batching.maxBatchSize",
        "fieldPath": ".engine.microBatches",
    },
    {
        "rule": "self.batching.maxBatchSize < 1 || size(self.engine.batchBuckets) == 0 || "
        "self.engine.batchBuckets.all(b, b <= self.batching.maxBatchSize)",
        "message": "engine.batchBuckets must not exceed batching.maxBatchSize",
        "fieldPath": ".engine.batchBuckets",
    },
]


GENERATION_SECTIONS = ("kvCache", "speculative", "generation")


def check_generation(model: ModelSpec, engine: EngineSpec) -> None:
    """engine.kvCache / speculative / generation only for a model that generates (also
    CEL on the CRD spec: GENERATION_CEL)."""
    for section in GENERATION_SECTIONS:
        attr = to_snake(section)
        if getattr(engine, attr) is not None and not model.may_generate:
            raise FieldError(f"engine.{section}", _generation_only(section))


def to_snake(camel: str) -> str:
    return re.sub(r"([A-Z])", lambda m: "_" + m.group(1).lower(), camel)


def _generation_only(section: str) -> str:
    return (
        f"engine.{section} applies to generative models only: set model.task to generate "
        "(or use builtin://llama or a file:// checkpoint)"
    )


_MAY_GENERATE_CEL = (
    "(has(self.model.task) ? self.model.task == 'generate' : "
    "(self.model.source == 'builtin://llama' || self.model.source.startsWith('file://')))"
)
GENERATION_CEL: list[CelRule] = [
    {
        "rule": f"!has(self.engine.{section}) || {_MAY_GENERATE_CEL}",
        "message": _generation_only(section),
        "fieldPath": f".engine.{section}",
    }
    for section in GENERATION_SECTIONS
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
