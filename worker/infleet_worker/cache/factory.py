"""``build_cache``: the one entry point the worker server uses."""

from __future__ import annotations

import logging
import os

from prometheus_client import CollectorRegistry

from infleet_worker.config import REDIS_URL_ENV, CacheMode, WorkerConfig

from .base import ResultCache
from .breaker import CircuitBreaker
from .metrics import CacheMetrics
from .redis_cache import EmbeddingCache, OutputCache
from .store import RedisStore

log = logging.getLogger(__name__)

_SCHEMES = ("redis://", "rediss://", "unix://")


def redis_url(cfg: WorkerConfig) -> str:
    """cache.redis.url, else the env var the operator fills from cache.redis.secretRef."""
    url = cfg.cache.redis.url or os.environ.get(REDIS_URL_ENV, "").strip()
    if not url:
        raise ValueError(
            f"cache.mode is {cfg.cache.mode.value} but neither cache.redis.url nor "
            f"${REDIS_URL_ENV} (from cache.redis.secretRef) is set"
        )
    if not url.startswith(_SCHEMES):
        # Never echo the value: it may hold a password.
        raise ValueError(
            f"${REDIS_URL_ENV} / cache.redis.url must start with redis:// or rediss://"
        )
    return url


def build_cache(
    cfg: WorkerConfig,
    registry: CollectorRegistry,
    *,
    failure_threshold: int = 5,
    breaker_backoff_s: float = 0.5,
    breaker_max_backoff_s: float = 5.0,
    max_connections: int = 64,
    max_pending_writes: int = 256,
    row_independent: bool | None = None,
) -> ResultCache | None:
    """The configured cache, or None when cache.mode is off.

    ``row_independent``: pass ``engine.row_independent`` when known. mode=embedding on
    a model whose rows are not independent would serve wrong rows, so it falls back to
    whole-request (output) entries, with a warning.

    Connects lazily: a Redis that is down at start-up does not stop the worker (the
    first look-ups fail open and the breaker opens). Raises ValueError only for a
    configuration that can never work (no URL, wrong scheme).
    """
    spec = cfg.cache
    if spec.mode == CacheMode.OFF:
        return None
    url = redis_url(cfg)
    mode = spec.mode
    if mode == CacheMode.EMBEDDING and row_independent is False:
        log.warning(
            "cache.mode=embedding needs a row-independent model; %s is not: "
            "caching whole requests (mode=output) instead",
            cfg.model.name,
        )
        mode = CacheMode.OUTPUT
    metrics = CacheMetrics(registry, cfg.model.name, mode.value)
    store = RedisStore(
        url,
        timeout_s=spec.redis.timeout_milliseconds / 1000.0,
        metrics=metrics,
        breaker=CircuitBreaker(
            failure_threshold=failure_threshold,
            backoff_s=breaker_backoff_s,
            max_backoff_s=breaker_max_backoff_s,
        ),
        max_connections=max_connections,
        max_pending_writes=max_pending_writes,
    )
    cls = EmbeddingCache if mode == CacheMode.EMBEDDING else OutputCache
    log.info(
        "cache: mode=%s namespace=%s ttl=%ss tls=%s",
        mode.value,
        spec.namespace,
        spec.ttl_seconds,
        url.startswith("rediss://"),
    )
    return cls(
        store,
        metrics,
        namespace=spec.namespace,
        ttl_seconds=spec.ttl_seconds,
        max_value_bytes=spec.max_value_bytes,
    )
