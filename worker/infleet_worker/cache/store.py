"""The Redis side of the cache: pooled async client, timeouts, breaker, background writes.

Nothing here raises to the request path. ``get_many`` answers ``None`` when
Redis could not be asked (breaker open) or failed (timeout, connection, auth):
the caller treats that as "all missed". ``put_many`` schedules a pipelined
``SET .. EX`` in a background task and returns at once; at most
``max_pending_writes`` such tasks run, further stores are dropped and counted.

redis-py's own retries are off: one attempt per call, bounded by the timeout,
so a dead Redis costs a request at most ``timeout`` before the breaker opens
and then nothing. Reconnecting is redis-py's: a broken pooled connection is
dropped when it fails and a fresh one dialled on next use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence

from redis import exceptions as rexc
from redis.asyncio import BlockingConnectionPool, Redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from .breaker import BreakerState, CircuitBreaker
from .metrics import CacheMetrics

log = logging.getLogger(__name__)


def classify(exc: BaseException) -> str:
    """Metric kind of a Redis call failure."""
    if isinstance(exc, TimeoutError | asyncio.TimeoutError | rexc.TimeoutError):
        return "timeout"
    if isinstance(exc, rexc.AuthenticationError | rexc.AuthorizationError):
        return "auth"
    if isinstance(exc, rexc.ConnectionError | OSError):
        return "connection"
    if isinstance(exc, rexc.ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS")):
        return "auth"
    return "redis"


# Failures that say "Redis is not usable from here": they count towards the breaker.
# An error reply (OOM, READONLY) means Redis answered; it is counted but does not trip it.
_BREAKER_KINDS = frozenset({"timeout", "connection", "auth"})


class RedisStore:
    def __init__(
        self,
        url: str,
        *,
        timeout_s: float,
        metrics: CacheMetrics,
        breaker: CircuitBreaker | None = None,
        max_connections: int = 64,
        max_pending_writes: int = 256,
        write_timeout_s: float | None = None,
    ) -> None:
        self.timeout_s = timeout_s
        self.write_timeout_s = write_timeout_s if write_timeout_s is not None else 4 * timeout_s
        self.metrics = metrics
        self.breaker = breaker or CircuitBreaker()
        self.breaker.on_change = self._on_breaker_change
        self.max_pending_writes = max_pending_writes
        self._pending: set[asyncio.Task[None]] = set()
        self._closed = False
        # One attempt per call; the outer asyncio timeout is the real bound, the socket
        # timeouts are a backstop. The pool blocks (up to the timeout) instead of
        # failing when every connection is busy.
        self._pool = BlockingConnectionPool.from_url(
            url,
            max_connections=max_connections,
            timeout=max(timeout_s, 0.001),
            socket_timeout=max(self.write_timeout_s, 0.001),
            socket_connect_timeout=max(timeout_s, 0.001),
            retry=Retry(NoBackoff(), 0),
            health_check_interval=0,
        )
        self._redis = Redis(connection_pool=self._pool)

    @property
    def redis(self) -> Redis:
        return self._redis

    def _on_breaker_change(self, state: BreakerState) -> None:
        self.metrics.breaker_open.set(0 if state is BreakerState.CLOSED else 1)
        log.warning("redis cache circuit breaker %s", state.value)

    def _failed(self, exc: BaseException, what: str) -> None:
        kind = classify(exc)
        self.metrics.errors[kind].inc()
        if kind in _BREAKER_KINDS:
            self.breaker.record_failure()
        else:
            self.breaker.record_success()
        log.debug("redis cache %s failed (%s): %r", what, kind, exc)

    async def get_many(self, keys: Sequence[str]) -> list[bytes | None] | None:
        """MGET in one round trip; None when Redis was not asked or failed."""
        if self._closed or not self.breaker.allow():
            self.metrics.bypassed["breaker_open"].inc()
            return None
        try:
            async with asyncio.timeout(self.timeout_s):
                values = await self._redis.mget(list(keys))
        except (rexc.RedisError, OSError, TimeoutError) as exc:
            self._failed(exc, "lookup")
            return None
        except BaseException:
            self.breaker.release()
            raise
        self.breaker.record_success()
        return [v if isinstance(v, bytes | None) else None for v in values]

    def put_many(self, items: Sequence[tuple[str, bytes]], ttl_s: int) -> bool:
        """Store in the background (pipelined SET EX). False if the store was dropped."""
        if not items or self._closed:
            return False
        if not self.breaker.is_closed:
            self.metrics.bypassed["breaker_open"].inc()
            return False
        if len(self._pending) >= self.max_pending_writes:
            self.metrics.errors["backlog"].inc()
            return False
        task = asyncio.get_running_loop().create_task(self._write(list(items), ttl_s))
        self._pending.add(task)
        self.metrics.pending_writes.set(len(self._pending))
        task.add_done_callback(self._write_done)
        return True

    def delete_many(self, keys: Sequence[str]) -> bool:
        """Remove entries in the background (UNLINK); False if not scheduled."""
        if not keys or self._closed or not self.breaker.is_closed:
            return False
        if len(self._pending) >= self.max_pending_writes:
            self.metrics.errors["backlog"].inc()
            return False
        task = asyncio.get_running_loop().create_task(self._unlink(list(keys)))
        self._pending.add(task)
        task.add_done_callback(self._write_done)
        return True

    async def _unlink(self, keys: list[str]) -> None:
        try:
            async with asyncio.timeout(self.write_timeout_s):
                await self._redis.unlink(*keys)
        except (rexc.RedisError, OSError, TimeoutError) as exc:
            self._failed(exc, "unlink")
        except asyncio.CancelledError:
            return

    def _write_done(self, task: asyncio.Task[None]) -> None:
        self._pending.discard(task)
        self.metrics.pending_writes.set(len(self._pending))

    async def _write(self, items: list[tuple[str, bytes]], ttl_s: int) -> None:
        try:
            async with asyncio.timeout(self.write_timeout_s):
                if len(items) == 1:
                    key, value = items[0]
                    await self._redis.set(key, value, ex=ttl_s)
                else:
                    async with self._redis.pipeline(transaction=False) as pipe:
                        for key, value in items:
                            pipe.set(key, value, ex=ttl_s)
                        await pipe.execute()
        except (rexc.RedisError, OSError, TimeoutError) as exc:
            self._failed(exc, "store")
            return
        except asyncio.CancelledError:
            return
        except Exception:  # never let a background store log "Task exception never retrieved"
            log.exception("redis cache store failed")
            self.metrics.errors["redis"].inc()
            return
        self.breaker.record_success()
        self.metrics.bytes_written.inc(sum(len(v) for _, v in items))

    async def flush(self, timeout_s: float = 5.0) -> None:
        """Wait for pending background stores (tests, shutdown)."""
        if self._pending:
            await asyncio.wait(set(self._pending), timeout=timeout_s)

    async def close(self, timeout_s: float = 2.0) -> None:
        self._closed = True
        await self.flush(timeout_s)
        for task in list(self._pending):
            task.cancel()
        with contextlib.suppress(Exception):
            await self._redis.aclose()
        with contextlib.suppress(Exception):
            await self._pool.disconnect()
