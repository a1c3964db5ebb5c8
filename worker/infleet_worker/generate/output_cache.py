"""The output cache for deterministic generation (``cache.mode: output``): a request's
whole token stream stored in the shared Redis under an exact key, replayed as a
stream (one output per token, as the engine gave them) on a hit.

Only deterministic requests are cached: greedy, or sampled with a ``seed``. The key
is a SHA-256 of the model name and version, the engine settings that may change
tokens (precision, the draft of speculative decoding), the
prompt token ids and every sampling parameter that shapes the output (not priority
or timeout). Only streams that finished (``stop`` or ``length``) are stored. Redis
failures are misses (the store's circuit breaker; fail open), counted in the cache's
metrics (docs/cache.md series, mode ``output``).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import asdict
from typing import Any

from prometheus_client import CollectorRegistry

from infleet_worker.cache.breaker import CircuitBreaker
from infleet_worker.cache.factory import redis_url
from infleet_worker.cache.metrics import CacheMetrics
from infleet_worker.cache.store import RedisStore
from infleet_worker.config import CacheMode, WorkerConfig
from infleet_worker.generate.sequence import SamplingParams, TokenOutput

KEY_VERSION = "gen1"
_UNKEYED = ("priority", "timeout_s")  # change when, not what


def engine_tag(cfg: WorkerConfig) -> str:
    sp = cfg.engine.speculative
    draft = json.dumps(sp.to_wire(), sort_keys=True) if sp is not None else ""
    return f"{cfg.engine.precision.value}|{draft}"


class GenerationCache:
    def __init__(
        self,
        store: RedisStore,
        metrics: CacheMetrics,
        *,
        model: str,
        version: str,
        tag: str,
        namespace: str,
        ttl_s: int,
        max_value_bytes: int,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.prefix = f"{namespace}:{KEY_VERSION}:{model}:{version}:"
        self.scope = f"{model}|{version}|{tag}"
        self.ttl_s = ttl_s
        self.max_value_bytes = max_value_bytes

    def key(self, ids: list[int], params: SamplingParams) -> str | None:
        """The entry's key, or None for a request whose output is not deterministic."""
        if not params.greedy and params.seed is None:
            return None
        shaping = {k: v for k, v in asdict(params).items() if k not in _UNKEYED}
        if params.greedy:
            shaping.update(seed=None, top_k=0, top_p=1.0, temperature=0.0)
        doc = json.dumps([self.scope, ids, shaping], sort_keys=True, default=list)
        return self.prefix + hashlib.sha256(doc.encode()).hexdigest()

    async def lookup(self, key: str) -> list[TokenOutput] | None:
        values = await self.store.get_many([key])
        raw = values[0] if values else None
        if raw is None:
            self.metrics.misses.inc()
            self.metrics.requests["miss"].inc()
            return None
        self.metrics.hits.inc()
        self.metrics.requests["hit"].inc()
        self.metrics.bytes_read.inc(len(raw))
        return [decode(row) for row in json.loads(raw)]

    def put(self, key: str, outputs: list[TokenOutput]) -> None:
        raw = json.dumps([encode(o) for o in outputs]).encode()
        if len(raw) <= self.max_value_bytes:
            self.store.put_many([(key, raw)], self.ttl_s)

    async def stream(
        self, ids: list[int], params: SamplingParams, compute: AsyncIterator[TokenOutput]
    ) -> AsyncGenerator[TokenOutput, None]:
        """A hit replayed, or the computed stream passed through (and stored when it
        finished). ``compute`` is only iterated on a miss."""
        key = self.key(ids, params)
        hit = await self.lookup(key) if key is not None else None
        if hit is not None:
            for out in hit:
                yield out
            return
        seen: list[TokenOutput] = []
        async for out in compute:
            seen.append(out)
            yield out
        if key is not None and seen and seen[-1].finish_reason in ("stop", "length"):
            self.put(key, seen)

    async def close(self) -> None:
        await self.store.close()


def encode(o: TokenOutput) -> list[Any]:
    top = None if o.top_logprobs is None else [[k, v] for k, v in o.top_logprobs.items()]
    return [o.token_id, o.text, o.logprob, top, o.finish_reason]


def decode(row: list[Any]) -> TokenOutput:
    token, text, logprob, top, finish = row
    tops = None if top is None else {int(k): float(v) for k, v in top}
    return TokenOutput(token, text, logprob, tops, finish_reason=finish)


def build_generation_cache(
    cfg: WorkerConfig, registry: CollectorRegistry
) -> GenerationCache | None:
    """cache.mode output: the cache; off: None; embedding is refused for generation."""
    spec = cfg.cache
    if spec.mode == CacheMode.OFF:
        return None
    if spec.mode != CacheMode.OUTPUT:
        raise ValueError("cache.mode embedding does not apply to generation: use output")
    metrics = CacheMetrics(registry, cfg.model.name, spec.mode.value)
    store = RedisStore(
        redis_url(cfg),
        timeout_s=spec.redis.timeout_milliseconds / 1000.0,
        metrics=metrics,
        breaker=CircuitBreaker(),
    )
    return GenerationCache(
        store,
        metrics,
        model=cfg.model.name,
        version=cfg.model.version,
        tag=engine_tag(cfg),
        namespace=spec.namespace,
        ttl_s=spec.ttl_seconds,
        max_value_bytes=spec.max_value_bytes,
    )
