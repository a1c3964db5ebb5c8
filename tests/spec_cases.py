"""Bad (and tricky good) InferenceDeployment specs: one table for the pydantic models, the
real API server (e2e/test_bad_specs.py) and ``infleet validate``.

Each bad case: an id, a patch applied to a valid base spec, the one field path the error
must name, written as the API server writes it (``spec.engine.batchBuckets``,
``spec.tolerations[0].effect``; the server's leading ``.`` on a few paths is dropped),
and a fragment of the message that the server and ``infleet validate`` both print.
Each case is one mistake, so each must give exactly one error.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

BASE_SPEC: dict[str, Any] = {
    "model": {"name": "mlp", "source": "builtin://mlp"},
    "engine": {"device": "cpu"},
    "batching": {"maxBatchSize": 16},
    "replicas": 1,
}
SOURCE_RULE = "must be builtin://NAME, file:///ABSOLUTE/PATH or python://package.module:factory"
NAME_RULE = "must be 1-63 lowercase letters, digits, '.', '_' or '-'"
GPU = "nvidia.com/gpu"


@dataclass(frozen=True)
class SpecCase:
    id: str
    patch: dict[str, Any]
    path: str = ""  # the field the one error names ("" for a valid case)
    message: str = ""  # a fragment of that error's message
    remove: tuple[str, ...] = ()  # dotted paths to delete from the base
    name: str = "case"  # metadata.name

    def spec(self) -> dict[str, Any]:
        spec = copy.deepcopy(BASE_SPEC)
        for path in self.remove:
            *parents, leaf = path.split(".")
            node = spec
            for p in parents:
                node = node[p]
            node.pop(leaf, None)
        _merge(spec, copy.deepcopy(self.patch))
        return spec

    def document(self) -> dict[str, Any]:
        return {
            "apiVersion": "infleet.dev/v1alpha1",
            "kind": "InferenceDeployment",
            "metadata": {"name": self.name},
            "spec": self.spec(),
        }


def _merge(into: dict[str, Any], patch: dict[str, Any]) -> None:
    for key, value in patch.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


C = SpecCase
INVALID_CASES: list[SpecCase] = [
    C("precision-enum", {"engine": {"precision": "int4"}}, "spec.engine.precision",
      'Unsupported value: "int4": supported values: "fp32", "fp16", "bf16", "int8", '
      '"int8-weight-only", "fp8"'),
    C("device-enum", {"engine": {"device": "tpu"}}, "spec.engine.device",
      'Unsupported value: "tpu"'),
    C("negative-replicas", {"replicas": -1}, "spec.replicas", "should be a non-negative integer"),
    C("zero-batch", {"batching": {"maxBatchSize": 0}}, "spec.batching.maxBatchSize",
      "should be greater than or equal to 1"),
    C("negative-queue-delay", {"batching": {"maxQueueDelayMicroseconds": -5}},
      "spec.batching.maxQueueDelayMicroseconds", "should be greater than or equal to 0"),
    C("pipeline-too-deep", {"engine": {"pipelineParallel": 9}}, "spec.engine.pipelineParallel",
      "should be less than or equal to 8"),
    C("min-above-max", {"autoscaling": {"enabled": True, "minReplicas": 5, "maxReplicas": 2}},
      "spec.autoscaling.minReplicas", "minReplicas must be <= maxReplicas"),
    C("microbatches-above-batch", {"engine": {"microBatches": 32}, "batching": {"maxBatchSize": 8}},
      "spec.engine.microBatches", "engine.microBatches must be <= batching.maxBatchSize"),
    C("bucket-above-batch", {"engine": {"batchBuckets": [1, 4, 64]}}, "spec.engine.batchBuckets",
      "engine.batchBuckets must not exceed batching.maxBatchSize"),
    C("buckets-descending", {"engine": {"batchBuckets": [8, 4, 2]}}, "spec.engine.batchBuckets",
      "batchBuckets must be strictly ascending"),
    C("buckets-repeated", {"engine": {"batchBuckets": [2, 2, 4]}}, "spec.engine.batchBuckets",
      "batchBuckets must be strictly ascending"),
    C("bucket-zero", {"engine": {"batchBuckets": [0, 2]}}, "spec.engine.batchBuckets",
      "batchBuckets entries must be >= 1"),
    C("unknown-field", {"engine": {"gpus": 2}}, "spec.engine.gpus",
      "field not declared in schema"),
    C("bad-source-scheme", {"model": {"source": "s3://bucket/model.pt"}}, "spec.model.source",
      SOURCE_RULE),
    C("relative-file-source", {"model": {"source": "file://model.pt"}}, "spec.model.source",
      SOURCE_RULE),
    C("bad-model-name", {"model": {"name": "My Model!"}}, "spec.model.name", NAME_RULE),
    C("missing-model", {}, "spec.model", "Required value", remove=("model",)),
    C("missing-source", {}, "spec.model.source", "Required value", remove=("model.source",)),
    C("cache-without-redis", {"cache": {"mode": "output"}}, "spec.cache.redis",
      "cache.mode is not off: set cache.redis.url or cache.redis.secretRef"),
    C("cache-mode-enum", {"cache": {"mode": "everything"}}, "spec.cache.mode",
      'Unsupported value: "everything"'),
    C("bad-redis-url", {"cache": {"mode": "output", "redis": {"url": "http://r:6379"}}},
      "spec.cache.redis.url", "should match"),
    C("zero-ttl", {"cache": {"ttlSeconds": 0}}, "spec.cache.ttlSeconds",
      "should be greater than or equal to 1"),
    C("zero-target-depth", {"autoscaling": {"targetQueueDepthPerReplica": 0}},
      "spec.autoscaling.targetQueueDepthPerReplica", "should be greater than 0"),
    C("policy-enum", {"autoscaling": {"policy": "magic"}}, "spec.autoscaling.policy",
      'Unsupported value: "magic"'),
    C("pull-policy-enum", {"imagePullPolicy": "Sometimes"}, "spec.imagePullPolicy",
      'Unsupported value: "Sometimes"'),
    C("toleration-effect-enum", {"tolerations": [{"key": "k", "effect": "Never"}]},
      "spec.tolerations[0].effect", 'Unsupported value: "Never"'),
    C("priority-default-above-levels",
      {"batching": {"priorityLevels": 2, "defaultPriorityLevel": 3}},
      "spec.batching.defaultPriorityLevel", "defaultPriorityLevel must be <= priorityLevels"),
    C("bad-quantity", {"resources": {"requests": {"cpu": "lots"}}}, "spec.resources.requests[cpu]",
      "must be a quantity such as 4, 500m, 1.5 or 16Gi"),
    C("negative-quantity", {"resources": {"limits": {"memory": "-1Gi"}}},
      "spec.resources.limits[memory]", "must be a quantity"),
    C("gpu-limit-on-cpu", {"resources": {"limits": {GPU: 2}}}, "spec.resources.limits",
      f"{GPU} on engine.device cpu"),
    C("gpu-request-on-cpu", {"resources": {"requests": {GPU: "1"}}}, "spec.resources.requests",
      f"{GPU} on engine.device cpu"),
    C("gpu-count-not-pipeline", {"engine": {"device": "cuda", "pipelineParallel": 2},
                                 "resources": {"limits": {GPU: 3}}},
      "spec.resources.limits", f"{GPU} must equal engine.pipelineParallel"),
    C("domain-min-above-max",
      {"model": {"inputs": [{"name": "x", "datatype": "INT64", "shape": [4],
                             "domain": {"min": 5, "max": 1}}]}},
      "spec.model.inputs[0].domain.min", "domain min must be <= max"),
    C("metadata-name", {}, "metadata.name",
      "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters",
      name="My_Model"),
]  # fmt: skip

# Specs both sides must accept (quantities are int-or-string, as in Kubernetes).
VALID_CASES: list[SpecCase] = [
    C("base", {}),
    C("gpu-int-quantity", {"engine": {"device": "cuda", "pipelineParallel": 2},
                           "resources": {"limits": {GPU: 2, "cpu": 4}, "requests": {GPU: "2"}}}),
    C("quantities", {"resources": {"requests": {"cpu": "500m", "memory": "16Gi"},
                                   "limits": {"cpu": "1.5", "memory": "1e9"}}}),
    C("ascending-buckets", {"engine": {"batchBuckets": [1, 2, 4, 16]}}),
    C("domain", {"model": {"inputs": [{"name": "ids", "datatype": "INT64", "shape": [8],
                                       "domain": {"min": 0, "max": 99}}]}}),
    C("dotted-name", {}, name="enc.v2"),
]  # fmt: skip

# Generation (issue 19): task, engine.kvCache / speculative / generation and their
# cross-field rules.
LLAMA = {"model": {"name": "llama", "source": "builtin://llama"}}
INVALID_CASES += [
    C("task-enum", {"model": {"task": "translate"}}, "spec.model.task",
      'Unsupported value: "translate"'),
    C("speculative-not-generative", {"engine": {"speculative": {"targetLayers": 1}}},
      "spec.engine.speculative", "engine.speculative applies to generative models only"),
    C("kvcache-on-embed-task", {**LLAMA, "engine": {"kvCache": {"blockSize": 32}},
                                "model": {**LLAMA["model"], "task": "embed"}},
      "spec.engine.kvCache", "engine.kvCache applies to generative models only"),
    C("generation-on-mlp", {"engine": {"generation": {"maxTokens": 10}}},
      "spec.engine.generation", "engine.generation applies to generative models only"),
    C("speculative-two-drafts", {**LLAMA, "engine": {"speculative": {
        "targetLayers": 1, "source": "builtin://llama"}}},
      "spec.engine.speculative.source",
      "set exactly one of speculative.source and speculative.targetLayers"),
    C("speculative-no-draft", {**LLAMA, "engine": {"speculative": {"numTokens": 4}}},
      "spec.engine.speculative.source",
      "set exactly one of speculative.source and speculative.targetLayers"),
    C("speculative-too-many-tokens", {**LLAMA, "engine": {"speculative": {
        "targetLayers": 1, "numTokens": 17}}},
      "spec.engine.speculative.numTokens", "should be less than or equal to 16"),
    C("speculative-zero-tokens", {**LLAMA, "engine": {"speculative": {
        "targetLayers": 1, "numTokens": 0}}},
      "spec.engine.speculative.numTokens", "should be greater than or equal to 1"),
    C("speculative-bad-source", {**LLAMA, "engine": {"speculative": {
        "source": "builtin://mlp"}}},
      "spec.engine.speculative.source", "must be builtin://llama or file:///PATH"),
    C("speculative-params-without-source", {**LLAMA, "engine": {"speculative": {
        "targetLayers": 1, "parameters": {"layers": "1"}}}},
      "spec.engine.speculative.parameters",
      "speculative.parameters apply to a speculative.source draft only"),
    C("kvcache-memory-fraction", {**LLAMA, "engine": {"kvCache": {"memoryFraction": 1.5}}},
      "spec.engine.kvCache.memoryFraction", "should be less than or equal to 1"),
    C("kvcache-block-size", {**LLAMA, "engine": {"kvCache": {"blockSize": 0}}},
      "spec.engine.kvCache.blockSize", "should be greater than or equal to 1"),
    C("generation-max-tokens-beyond-context", {**LLAMA, "engine": {"generation": {
        "maxContextTokens": 256, "maxTokens": 256}}},
      "spec.engine.generation.maxTokens",
      "generation.maxTokens must be < generation.maxContextTokens"),
    C("generation-zero-running", {**LLAMA, "engine": {"generation": {
        "maxRunningSequences": 0}}},
      "spec.engine.generation.maxRunningSequences", "should be greater than or equal to 1"),
]  # fmt: skip
VALID_CASES += [
    C("llama-inferred-generate", {**LLAMA, "engine": {
        "kvCache": {"blockSize": 16, "memoryFraction": 0.5, "prefixCaching": False},
        "speculative": {"targetLayers": 1, "numTokens": 4},
        "generation": {"maxContextTokens": 512, "maxTokens": 128,
                       "maxRunningSequences": 8}}}),
    C("file-task-generate-draft", {"model": {"name": "m", "source": "file:///models/llama",
                                             "task": "generate"},
                                   "engine": {"speculative": {"source": "file:///models/draft",
                                                              "numTokens": 16}}}),
    C("builtin-draft-with-sizes", {**LLAMA, "engine": {"speculative": {
        "source": "builtin://llama", "parameters": {"layers": "1"}, "adaptive": False}}}),
    C("mlp-task-classify", {"model": {"task": "classify"}}),
]  # fmt: skip
