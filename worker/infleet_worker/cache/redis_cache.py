"""The two ResultCache implementations over a shared Redis.

``OutputCache`` (mode=output) stores whole responses under one key per request.
``EmbeddingCache`` (mode=embedding) stores one entry per input row, so a batch
whose rows were partly seen before computes only the new rows; it relies on the
model being row-independent (output row i depends only on input row i).

Both fail open: ``lookup`` never raises and a Redis problem is a miss;
``complete`` stores in the background and never waits for Redis.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from infleet_worker.tensors import InferRequest, InferResult, Tensor

from .base import CacheLookup
from .codec import CodecError, decode, encode
from .keys import UnhashableRequest, output_key, row_count, row_keys
from .metrics import CacheMetrics
from .store import RedisStore

log = logging.getLogger(__name__)


class CacheMergeError(RuntimeError):
    """Cached rows and freshly computed rows do not fit together (dtype/shape).

    Only possible when the model is not row-independent or a foreign but
    well-formed value sits under this fleet's keys; the offending keys are deleted.
    """


def _select(outputs: dict[str, Tensor], requested: list[str] | None) -> dict[str, Tensor]:
    """The outputs the client asked for, in its order; CodecError if any is missing."""
    if requested is None:
        return outputs
    try:
        return {name: outputs[name] for name in requested}
    except KeyError as exc:
        raise CodecError(f"cached entry lacks output {exc.args[0]!r}") from None


class _RedisCache:
    mode = "?"

    async def lookup(self, request: InferRequest) -> CacheLookup:
        """Timed and fail-open: any failure inside ``_lookup`` is a miss, never an error."""
        start = time.perf_counter()
        try:
            return await self._lookup(request)
        except Exception:
            self._internal("lookup")
            return CacheLookup(to_compute=request)
        finally:
            self.metrics.lookup_seconds.observe(time.perf_counter() - start)

    async def _lookup(self, request: InferRequest) -> CacheLookup:
        raise NotImplementedError

    def __init__(
        self,
        store: RedisStore,
        metrics: CacheMetrics,
        *,
        namespace: str,
        ttl_seconds: int,
        max_value_bytes: int,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.namespace = namespace
        self.ttl_seconds = ttl_seconds
        self.max_value_bytes = max_value_bytes

    async def close(self) -> None:
        await self.store.close()

    async def flush(self) -> None:
        """Wait until background stores have reached Redis (tests, benchmarks)."""
        await self.store.flush()

    def _miss_all(self, request: InferRequest, entries: int) -> CacheLookup:
        self.metrics.misses.inc(entries)
        self.metrics.requests["miss"].inc()
        return CacheLookup(to_compute=request)

    def _internal(self, what: str) -> None:
        self.metrics.errors["internal"].inc()
        log.exception("redis cache %s failed; serving without cache", what)


@dataclass(slots=True)
class _OutputState:
    key: str


class OutputCache(_RedisCache):
    """Whole-request entries (mode=output)."""

    mode = "output"

    async def _lookup(self, request: InferRequest) -> CacheLookup:
        try:
            key = output_key(self.namespace, request)
        except UnhashableRequest:
            self.metrics.bypassed["unsupported"].inc()
            return self._miss_all(request, 1)
        values = await self.store.get_many([key])
        value = values[0] if values else None
        state = _OutputState(key)
        if value is None:
            self.metrics.misses.inc()
            self.metrics.requests["miss"].inc()
            return CacheLookup(to_compute=request, state=state)
        self.metrics.bytes_read.inc(len(value))
        try:
            outputs = _select(decode(value), request.requested_outputs)
        except CodecError as exc:
            log.debug("corrupt cache value under %s: %s", key, exc)
            self.metrics.errors["corrupt"].inc()
            self.metrics.misses.inc()
            self.metrics.requests["miss"].inc()
            return CacheLookup(to_compute=request, state=state)
        self.metrics.hits.inc()
        self.metrics.requests["hit"].inc()
        return CacheLookup(result=InferResult(outputs, cached=True))

    async def complete(
        self, request: InferRequest, lookup: CacheLookup, computed: InferResult
    ) -> InferResult:
        if lookup.result is not None:
            return lookup.result
        state = lookup.state
        if not isinstance(state, _OutputState):
            return computed
        if not self.store.breaker.is_closed:  # would not be stored: skip the encoding
            self.metrics.bypassed["breaker_open"].inc()
            return computed
        try:
            value = encode(computed.outputs)
        except CodecError:
            self.metrics.errors["encode"].inc()
            return computed
        except Exception:
            self._internal("encode")
            return computed
        if len(value) > self.max_value_bytes:
            self.metrics.bypassed["oversize"].inc()
            return computed
        self.store.put_many([(state.key, value)], self.ttl_seconds)
        return computed


@dataclass(slots=True)
class _EmbeddingState:
    keys: list[str]  # one per row of the original request
    compute_rows: list[int]  # original row index of each row of to_compute
    position: dict[int, int]  # original missing row -> its row in to_compute


def _row(array: np.ndarray, i: int) -> np.ndarray:
    """Row i as an array (a 0-d array for 1-d tensors, object dtype kept for BYTES)."""
    return array[i : i + 1].reshape(array.shape[1:])


class EmbeddingCache(_RedisCache):
    """One entry per input row (mode=embedding); partial hits compute only the misses."""

    mode = "embedding"

    async def _lookup(self, request: InferRequest) -> CacheLookup:
        n = row_count(request)
        if not n:
            self.metrics.bypassed["unsupported"].inc()
            return self._miss_all(request, max(n or 0, 1))
        try:
            keys = row_keys(self.namespace, request)
        except UnhashableRequest:
            self.metrics.bypassed["unsupported"].inc()
            return self._miss_all(request, n)
        values = await self.store.get_many(keys)
        hits: dict[int, dict[str, Tensor]] = {}
        if values is not None:
            hits = self._decode_hits(request, keys, values)
        if len(hits) == n:
            self.metrics.hits.inc(n)
            self.metrics.requests["hit"].inc()
            return CacheLookup(result=InferResult(self._stack(hits, n), cached=True))
        # Compute each distinct missing row once, in the original order.
        first: dict[str, int] = {}
        compute_rows: list[int] = []
        position: dict[int, int] = {}
        for i in range(n):
            if i in hits:
                continue
            j = first.get(keys[i])
            if j is None:
                j = first[keys[i]] = len(compute_rows)
                compute_rows.append(i)
            position[i] = j
        if len(compute_rows) == n:
            to_compute = request
        else:
            rows = np.asarray(compute_rows, dtype=np.intp)
            to_compute = InferRequest(
                model_name=request.model_name,
                model_version=request.model_version,
                inputs={
                    name: Tensor(t.datatype, t.array[rows]) for name, t in request.inputs.items()
                },
                request_id=request.request_id,
                requested_outputs=request.requested_outputs,
                priority=request.priority,
                timeout_us=request.timeout_us,
                parameters=request.parameters,
            )
        self.metrics.hits.inc(len(hits))
        self.metrics.misses.inc(n - len(hits))
        self.metrics.requests["partial" if hits else "miss"].inc()
        return CacheLookup(
            to_compute=to_compute,
            hit_rows=hits,
            state=_EmbeddingState(keys, compute_rows, position),
        )

    def _decode_hits(
        self, request: InferRequest, keys: list[str], values: list[bytes | None]
    ) -> dict[int, dict[str, Tensor]]:
        hits: dict[int, dict[str, Tensor]] = {}
        signature: list[tuple[str, Any, tuple[int, ...], Any]] | None = None
        if len(values) != len(keys):
            self.metrics.errors["corrupt"].inc()
            return hits
        for i, value in enumerate(values):
            if value is None:
                continue
            self.metrics.bytes_read.inc(len(value))
            try:
                row = _select(decode(value), request.requested_outputs)
                sig = [(k, t.datatype, t.shape, t.array.dtype) for k, t in row.items()]
                if signature is None:
                    signature = sig
                elif sig != signature:
                    raise CodecError("cached rows of one request disagree in outputs/shape")
            except CodecError as exc:
                log.debug("corrupt cache value under %s: %s", keys[i], exc)
                self.metrics.errors["corrupt"].inc()
                continue
            hits[i] = row
        return hits

    @staticmethod
    def _stack(rows: dict[int, dict[str, Tensor]], n: int) -> dict[str, Tensor]:
        first = rows[0]
        return {
            name: Tensor(t.datatype, np.stack([rows[i][name].array for i in range(n)]))
            for name, t in first.items()
        }

    async def complete(
        self, request: InferRequest, lookup: CacheLookup, computed: InferResult
    ) -> InferResult:
        if lookup.result is not None:
            return lookup.result
        state = lookup.state
        if not isinstance(state, _EmbeddingState):
            return computed
        m = len(state.compute_rows)
        for tensor in computed.outputs.values():
            if tensor.array.ndim == 0 or tensor.array.shape[0] != m:
                # Not one output row per input row: nothing to merge or store per row.
                if lookup.hit_rows:
                    self._evict(state, lookup)
                    raise CacheMergeError("engine output is not one row per input row")
                return computed
        try:
            self._store_rows(state, computed)
        except Exception:
            self._internal("store")
        n = len(state.keys)
        if not lookup.hit_rows and m == n:
            return computed
        merged: dict[str, Tensor] = {}
        try:
            for name, tensor in computed.outputs.items():
                parts = []
                for i in range(n):
                    hit = lookup.hit_rows.get(i)
                    if hit is None:
                        parts.append(_row(tensor.array, state.position[i]))
                        continue
                    cached = hit.get(name)
                    if cached is None or cached.datatype != tensor.datatype:
                        raise CacheMergeError(f"cached row {i} does not match output {name!r}")
                    parts.append(cached.array)
                if any(p.shape != parts[0].shape for p in parts):
                    raise CacheMergeError(f"cached rows do not match output {name!r} in shape")
                merged[name] = Tensor(tensor.datatype, np.stack(parts))
        except CacheMergeError:
            self.metrics.errors["corrupt"].inc()
            self._evict(state, lookup)
            raise
        return InferResult(merged, cached=False)

    def _store_rows(self, state: _EmbeddingState, computed: InferResult) -> None:
        if not self.store.breaker.is_closed:  # would not be stored: skip the encoding
            self.metrics.bypassed["breaker_open"].inc()
            return
        items: list[tuple[str, bytes]] = []
        for j, i in enumerate(state.compute_rows):
            try:
                value = encode(
                    {
                        name: Tensor(t.datatype, _row(t.array, j))
                        for name, t in computed.outputs.items()
                    }
                )
            except CodecError:
                self.metrics.errors["encode"].inc()
                return
            if len(value) > self.max_value_bytes:
                self.metrics.bypassed["oversize"].inc()
                continue
            items.append((state.keys[i], value))
        self.store.put_many(items, self.ttl_seconds)

    def _evict(self, state: _EmbeddingState, lookup: CacheLookup) -> None:
        self.store.delete_many([state.keys[i] for i in lookup.hit_rows])
