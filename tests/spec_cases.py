"""Invalid InferenceDeployment specs, shared by the model tests and the real-API-server e2e.

Each case: an id, a patch applied to a valid base spec, and the field path the
error must name (camelCase, as the user wrote it). ``strict`` cases are only
refused by the API server under strict field validation (unknown fields).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

BASE_SPEC: dict[str, Any] = {
    "model": {"name": "mlp", "source": "builtin://mlp"},
    "engine": {"device": "cpu"},
    "batching": {"maxBatchSize": 16},
    "replicas": 1,
}


@dataclass(frozen=True)
class InvalidCase:
    id: str
    patch: dict[str, Any]
    field: str  # must appear in the error message
    remove: tuple[str, ...] = ()  # dotted paths to delete from the base
    strict: bool = field(default=False)

    def spec(self) -> dict[str, Any]:
        spec = copy.deepcopy(BASE_SPEC)
        for path in self.remove:
            *parents, leaf = path.split(".")
            node = spec
            for p in parents:
                node = node[p]
            node.pop(leaf, None)
        _merge(spec, self.patch)
        return spec


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


INVALID_CASES: list[InvalidCase] = [
    InvalidCase("precision-enum", {"engine": {"precision": "int4"}}, "precision"),
    InvalidCase("device-enum", {"engine": {"device": "tpu"}}, "device"),
    InvalidCase("negative-replicas", {"replicas": -1}, "replicas"),
    InvalidCase("zero-batch", {"batching": {"maxBatchSize": 0}}, "maxBatchSize"),
    InvalidCase(
        "negative-queue-delay",
        {"batching": {"maxQueueDelayMicroseconds": -5}},
        "maxQueueDelayMicroseconds",
    ),
    InvalidCase("pipeline-too-deep", {"engine": {"pipelineParallel": 9}}, "pipelineParallel"),
    InvalidCase(
        "min-above-max",
        {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
        "minReplicas",
    ),
    InvalidCase(
        "microbatches-above-batch",
        {"engine": {"microBatches": 32}, "batching": {"maxBatchSize": 8}},
        "microBatches",
    ),
    InvalidCase("bucket-above-batch", {"engine": {"batchBuckets": [1, 4, 64]}}, "batchBuckets"),
    InvalidCase("unknown-field", {"engine": {"gpus": 2}}, "gpus", strict=True),
    InvalidCase("bad-source-scheme", {"model": {"source": "s3://bucket/model.pt"}}, "source"),
    InvalidCase("relative-file-source", {"model": {"source": "file://model.pt"}}, "source"),
    InvalidCase("bad-model-name", {"model": {"name": "My Model!"}}, "name"),
    InvalidCase("missing-model", {}, "model", remove=("model",)),
    InvalidCase("missing-source", {}, "source", remove=("model.source",)),
    InvalidCase("cache-without-redis", {"cache": {"mode": "output"}}, "redis"),
    InvalidCase("cache-mode-enum", {"cache": {"mode": "everything"}}, "mode"),
    InvalidCase(
        "bad-redis-url", {"cache": {"mode": "output", "redis": {"url": "http://r:6379"}}}, "url"
    ),
    InvalidCase("zero-ttl", {"cache": {"ttlSeconds": 0}}, "ttlSeconds"),
    InvalidCase(
        "zero-target-depth",
        {"autoscaling": {"targetQueueDepthPerReplica": 0}},
        "targetQueueDepthPerReplica",
    ),
    InvalidCase("policy-enum", {"autoscaling": {"policy": "magic"}}, "policy"),
    InvalidCase("pull-policy-enum", {"imagePullPolicy": "Sometimes"}, "imagePullPolicy"),
    InvalidCase(
        "priority-default-above-levels",
        {"batching": {"priorityLevels": 2, "defaultPriorityLevel": 3}},
        "defaultPriorityLevel",
    ),
    InvalidCase("bad-quantity", {"resources": {"requests": {"cpu": "lots"}}}, "requests"),
]
