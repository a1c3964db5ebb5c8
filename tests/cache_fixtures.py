"""Cache helpers for tests and benchmarks (no Redis, no engine needed here)."""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np

from infleet_worker.cache.base import ResultCache
from infleet_worker.config import CacheMode, WorkerConfig
from infleet_worker.tensors import InferRequest, InferResult, Tensor


def cache_config(
    url: str | None,
    mode: CacheMode | str = CacheMode.OUTPUT,
    *,
    model: str = "enc",
    version: str = "1",
    **cache: Any,
) -> WorkerConfig:
    """A WorkerConfig with the cache section set (url None = secretRef, URL from env)."""
    redis: dict[str, Any] = {"url": url} if url else {"secretRef": {"name": "r", "key": "url"}}
    if "timeout_milliseconds" in cache:
        redis["timeoutMilliseconds"] = cache.pop("timeout_milliseconds")
    spec: dict[str, Any] = {"mode": str(CacheMode(mode).value), "redis": redis}
    spec.update(cache)
    return WorkerConfig.model_validate(
        {
            "model": {"name": model, "version": version, "source": "builtin://synthetic"},
            "cache": spec,
        }
    )


class CountingEmbedder:
    """A row-independent fake embedding model that counts what it computes.

    ``embedding`` row i = a deterministic function of input row i (FP32, ``dim`` wide);
    ``norm`` row i = a scalar. ``delay_s`` simulates model time per call.
    """

    def __init__(self, dim: int = 768, delay_s: float = 0.0) -> None:
        self.dim = dim
        self.delay_s = delay_s
        self.calls = 0
        self.rows = 0

    def compute(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        ids = inputs["input_ids"].array.astype(np.float64)
        self.calls += 1
        self.rows += ids.shape[0]
        base = ids.sum(axis=tuple(range(1, ids.ndim))) if ids.ndim > 1 else ids
        scale = np.arange(1, self.dim + 1, dtype=np.float64)
        emb = np.sin(np.outer(base + 1.0, scale) / self.dim).astype(np.float32)
        return {
            "embedding": Tensor("FP32", emb),
            "norm": Tensor("FP32", np.linalg.norm(emb, axis=1).astype(np.float32)),
        }

    async def run(self, request: InferRequest) -> InferResult:
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        outputs = self.compute(request.inputs)
        if request.requested_outputs is not None:
            outputs = {k: outputs[k] for k in request.requested_outputs}
        return InferResult(outputs)


async def serve(
    cache: ResultCache | None, model: CountingEmbedder, req: InferRequest
) -> InferResult:
    """The worker's request path in miniature: lookup -> compute misses -> complete."""
    if cache is None:
        return await model.run(req)
    lookup = await cache.lookup(req)
    if lookup.result is not None:
        return lookup.result
    assert lookup.to_compute is not None
    computed = await model.run(lookup.to_compute)
    return await cache.complete(req, lookup, computed)


def ids_request(
    rows: np.ndarray | list[list[int]],
    *,
    model: str = "enc",
    version: str = "1",
    requested: list[str] | None = None,
) -> InferRequest:
    array = np.asarray(rows, dtype=np.int64)
    mask = np.ones_like(array)
    return InferRequest(
        model_name=model,
        model_version=version,
        inputs={"input_ids": Tensor("INT64", array), "attention_mask": Tensor("INT64", mask)},
        requested_outputs=requested,
    )
