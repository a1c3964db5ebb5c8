"""The cache against a real redis-server: sharing, partial hits, TTL, versions, corruption."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from cache_fixtures import CountingEmbedder, cache_config, ids_request, serve
from infleet_worker.cache.base import ResultCache
from infleet_worker.cache.factory import build_cache
from infleet_worker.cache.keys import output_key, row_keys
from infleet_worker.cache.redis_cache import EmbeddingCache, OutputCache
from infleet_worker.config import REDIS_URL_ENV


def _sample(reg: CollectorRegistry, name: str, **labels: str) -> float:
    value = reg.get_sample_value(name, {"model": "enc", **labels})
    return value or 0.0


def _build(
    url: str | None, mode: str = "output", **kw: object
) -> tuple[ResultCache, CollectorRegistry]:
    reg = CollectorRegistry()
    model = kw.pop("model", "enc")
    kw.setdefault("timeout_milliseconds", 1000)  # no spurious timeouts on a busy CI host
    version = kw.pop("version", "1")
    cache = build_cache(cache_config(url, mode, model=str(model), version=str(version), **kw), reg)
    assert cache is not None
    return cache, reg


async def _flush(*caches: ResultCache) -> None:
    for c in caches:
        await c.flush()  # type: ignore[attr-defined]


def _rows(n: int, offset: int = 0) -> np.ndarray:
    return np.arange(offset, offset + n * 4, dtype=np.int64).reshape(n, 4)


def test_mode_off_builds_nothing() -> None:
    assert build_cache(cache_config(None, "off"), CollectorRegistry()) is None


def test_embedding_mode_needs_a_row_independent_model() -> None:
    cfg = cache_config("redis://127.0.0.1:1/0", "embedding")
    assert isinstance(build_cache(cfg, CollectorRegistry()), EmbeddingCache)
    assert isinstance(build_cache(cfg, CollectorRegistry(), row_independent=True), EmbeddingCache)
    assert isinstance(build_cache(cfg, CollectorRegistry(), row_independent=False), OutputCache)


async def test_output_cache_shared_between_two_workers(redis_url: str) -> None:
    a, reg_a = _build(redis_url)
    b, reg_b = _build(redis_url)
    assert isinstance(a, OutputCache)
    model_a, model_b = CountingEmbedder(), CountingEmbedder()
    req = ids_request(_rows(3))
    first = await serve(a, model_a, req)
    assert not first.cached and model_a.calls == 1
    await _flush(a)
    second = await serve(b, model_b, ids_request(_rows(3)))
    assert second.cached and model_b.calls == 0
    assert list(second.outputs) == list(first.outputs)
    for name in first.outputs:
        assert second.outputs[name].datatype == first.outputs[name].datatype
        assert second.outputs[name].array.tobytes() == first.outputs[name].array.tobytes()
    assert _sample(reg_a, "infleet_cache_misses_total", mode="output") == 1
    assert _sample(reg_b, "infleet_cache_hits_total", mode="output") == 1
    assert _sample(reg_a, "infleet_cache_bytes_written_total", mode="output") > 3 * 768 * 4
    assert _sample(reg_b, "infleet_cache_bytes_read_total", mode="output") > 3 * 768 * 4
    assert _sample(reg_b, "infleet_cache_lookup_seconds_count", mode="output") == 1
    await a.close()
    await b.close()


async def test_requested_outputs_answered_in_client_order(redis_url: str) -> None:
    cache, _ = _build(redis_url)
    model = CountingEmbedder()
    await serve(cache, model, ids_request(_rows(2), requested=["embedding", "norm"]))
    await _flush(cache)
    hit = await serve(cache, model, ids_request(_rows(2), requested=["norm", "embedding"]))
    assert hit.cached and list(hit.outputs) == ["norm", "embedding"]
    await cache.close()


async def test_new_version_misses(redis_url: str) -> None:
    v1, _ = _build(redis_url, version="1")
    v2, reg2 = _build(redis_url, version="2")
    model = CountingEmbedder()
    await serve(v1, model, ids_request(_rows(2), version="1"))
    await _flush(v1)
    res = await serve(v2, model, ids_request(_rows(2), version="2"))
    assert not res.cached and model.calls == 2
    assert _sample(reg2, "infleet_cache_misses_total", mode="output") == 1
    await v1.close()
    await v2.close()


async def test_ttl_expiry(redis_url: str) -> None:
    cache, _ = _build(redis_url, ttl_seconds=1)
    model = CountingEmbedder()
    req = ids_request(_rows(1))
    await serve(cache, model, req)
    await _flush(cache)
    key = output_key("infleet", req)
    r = cache.store.redis  # type: ignore[attr-defined]
    ttl_ms = await r.pttl(key)
    assert 0 < ttl_ms <= 1000
    assert (await serve(cache, model, req)).cached
    await asyncio.sleep(1.3)
    assert not (await serve(cache, model, req)).cached
    assert model.calls == 2
    await cache.close()


async def test_corrupted_value_is_a_counted_miss_then_repaired(redis_url: str) -> None:
    cache, reg = _build(redis_url)
    model = CountingEmbedder()
    req = ids_request(_rows(2))
    key = output_key("infleet", req)
    r = cache.store.redis  # type: ignore[attr-defined]
    for junk in (b"\x80\x04\x95garbage-pickle", b"IFC\x01\x01\x00\x01", b""):
        await r.set(key, junk)
        res = await serve(cache, model, req)
        assert not res.cached and "embedding" in res.outputs
        await _flush(cache)
    assert _sample(reg, "infleet_cache_errors_total", mode="output", kind="corrupt") == 3
    assert (await serve(cache, model, req)).cached  # the store replaced the junk
    # a well-formed value that lacks a requested output is also a miss
    req2 = ids_request(_rows(2), requested=["embedding", "norm"])
    await serve(cache, model, ids_request(_rows(2), requested=["norm"]))
    await _flush(cache)
    await r.copy(
        output_key("infleet", ids_request(_rows(2), requested=["norm"])),
        output_key("infleet", req2),
    )
    assert not (await serve(cache, model, req2)).cached
    # a foreign Redis type under the key: MGET reads nil, the store overwrites it
    await r.delete(key)
    await r.rpush(key, b"x")
    assert not (await serve(cache, model, req)).cached
    await _flush(cache)
    assert (await serve(cache, model, req)).cached
    await cache.close()


async def test_oversize_values_are_not_stored(redis_url: str) -> None:
    cache, reg = _build(redis_url, max_value_bytes=1024)
    model = CountingEmbedder(dim=768)  # 3 KiB per row
    req = ids_request(_rows(1))
    await serve(cache, model, req)
    await _flush(cache)
    assert await cache.store.redis.exists(output_key("infleet", req)) == 0  # type: ignore[attr-defined]
    assert _sample(reg, "infleet_cache_bypassed_total", mode="output", reason="oversize") == 1
    assert not (await serve(cache, model, req)).cached
    await cache.close()


async def test_embedding_partial_hits_compute_only_misses(redis_url: str) -> None:
    cache, reg = _build(redis_url, mode="embedding")
    other, _ = _build(redis_url, mode="embedding")  # a second worker
    assert isinstance(cache, EmbeddingCache)
    model = CountingEmbedder()
    batch = _rows(8)
    # warm 5 of the 8 rows (rows 0, 2, 3, 5, 7) through the other worker
    warm = [0, 2, 3, 5, 7]
    await serve(other, CountingEmbedder(), ids_request(batch[warm]))
    await _flush(other)
    res = await serve(cache, model, ids_request(batch))
    assert model.calls == 1 and model.rows == 3
    expected = CountingEmbedder().compute(ids_request(batch).inputs)
    for name, t in expected.items():
        assert res.outputs[name].array.shape == t.array.shape
        np.testing.assert_array_equal(res.outputs[name].array, t.array)
    assert _sample(reg, "infleet_cache_hits_total", mode="embedding") == 5
    assert _sample(reg, "infleet_cache_misses_total", mode="embedding") == 3
    assert _sample(reg, "infleet_cache_requests_total", mode="embedding", outcome="partial") == 1
    # now all 8 are cached: a full hit, no compute
    await _flush(cache)
    full = await serve(cache, model, ids_request(batch))
    assert full.cached and model.calls == 1
    for name, t in expected.items():
        np.testing.assert_array_equal(full.outputs[name].array, t.array)
    await cache.close()
    await other.close()


async def test_embedding_duplicate_rows_computed_once(redis_url: str) -> None:
    cache, _ = _build(redis_url, mode="embedding")
    model = CountingEmbedder(dim=8)
    batch = _rows(3)
    req = ids_request(np.stack([batch[0], batch[1], batch[0], batch[2], batch[1]]))
    res = await serve(cache, model, req)
    assert model.rows == 3
    expected = CountingEmbedder(dim=8).compute(req.inputs)
    np.testing.assert_array_equal(res.outputs["embedding"].array, expected["embedding"].array)
    await cache.close()


async def test_embedding_corrupt_row_recomputed(redis_url: str) -> None:
    cache, reg = _build(redis_url, mode="embedding")
    model = CountingEmbedder(dim=16)
    req = ids_request(_rows(4))
    await serve(cache, model, req)
    await _flush(cache)
    keys = row_keys("infleet", req)
    await cache.store.redis.set(keys[1], b"IFC\x01garbage")  # type: ignore[attr-defined]
    res = await serve(cache, model, req)
    assert not res.cached and model.rows == 5
    np.testing.assert_array_equal(
        res.outputs["embedding"].array,
        CountingEmbedder(dim=16).compute(req.inputs)["embedding"].array,
    )
    assert _sample(reg, "infleet_cache_errors_total", mode="embedding", kind="corrupt") == 1
    await cache.close()


async def test_embedding_1d_and_bytes_outputs(redis_url: str) -> None:
    from infleet_worker.tensors import InferRequest, InferResult, Tensor

    cache, _ = _build(redis_url, mode="embedding")
    texts = np.array([b"a", b"bb", b"ccc"], dtype=object)

    def run(t: np.ndarray) -> InferResult:
        return InferResult(
            {
                "len": Tensor("INT32", np.array([len(x) for x in t], np.int32)),
                "upper": Tensor("BYTES", np.array([x.upper() for x in t], dtype=object)),
            }
        )

    async def go(t: np.ndarray) -> InferResult:
        req = InferRequest("enc", "1", {"text": Tensor("BYTES", t)})
        look = await cache.lookup(req)
        if look.result is not None:
            return look.result
        assert look.to_compute is not None
        return await cache.complete(req, look, run(look.to_compute.inputs["text"].array))

    await go(texts[:2])
    await cache.flush()  # type: ignore[attr-defined]
    res = await go(texts)
    assert list(res.outputs["len"].array) == [1, 2, 3]
    assert list(res.outputs["upper"].array) == [b"A", b"BB", b"CCC"]
    await cache.flush()  # type: ignore[attr-defined]
    full = await go(texts[::-1].copy())
    assert full.cached and list(full.outputs["upper"].array) == [b"CCC", b"BB", b"A"]
    await cache.close()


async def test_url_from_env_for_secret_ref(redis_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(REDIS_URL_ENV, redis_url)
    cache, _ = _build(None)
    model = CountingEmbedder(dim=4)
    await serve(cache, model, ids_request(_rows(1)))
    await _flush(cache)
    assert (await serve(cache, model, ids_request(_rows(1)))).cached
    await cache.close()
    monkeypatch.delenv(REDIS_URL_ENV)
    with pytest.raises(ValueError, match=REDIS_URL_ENV):
        build_cache(cache_config(None), CollectorRegistry())
    monkeypatch.setenv(REDIS_URL_ENV, "http://secret@host")
    with pytest.raises(ValueError) as info:
        build_cache(cache_config(None), CollectorRegistry())
    assert "secret" not in str(info.value)


async def test_auth(tmp_path: object) -> None:
    from pathlib import Path

    from redis_fixtures import RedisServer

    with RedisServer(Path(str(tmp_path)), password="s3cret") as server:
        good, _ = _build(server.url)
        model = CountingEmbedder(dim=4)
        await serve(good, model, ids_request(_rows(1)))
        await _flush(good)
        assert (await serve(good, model, ids_request(_rows(1)))).cached
        await good.close()
        bad_url = server.url.replace("s3cret", "wrong")
        bad, reg = _build(bad_url)
        res = await serve(bad, model, ids_request(_rows(1)))
        assert not res.cached and "embedding" in res.outputs
        assert _sample(reg, "infleet_cache_errors_total", mode="output", kind="auth") == 1
        await bad.close()


async def test_tls(tmp_path: object) -> None:
    from pathlib import Path

    from redis_fixtures import RedisServer

    with RedisServer(Path(str(tmp_path)), password="pw", tls=True) as server:
        assert server.url.startswith("rediss://")
        cache, _ = _build(server.url, timeout_milliseconds=2000)  # TLS handshake, busy host
        model = CountingEmbedder(dim=4)
        await serve(cache, model, ids_request(_rows(1)))
        await _flush(cache)
        assert (await serve(cache, model, ids_request(_rows(1)))).cached
        await cache.close()
        # a client that does not trust the server's certificate: fail open, counted
        untrusted, reg2 = _build(server.url.split("?", 1)[0], timeout_milliseconds=2000)
        res = await serve(untrusted, model, ids_request(_rows(1)))
        assert not res.cached and "embedding" in res.outputs
        assert _sample(reg2, "infleet_cache_errors_total", mode="output", kind="connection") >= 1
        await untrusted.close()
        # plain text against the TLS port does not work either, and does not crash
        plain, reg3 = _build(server.url.split("?", 1)[0].replace("rediss://", "redis://"))
        res = await serve(plain, model, ids_request(_rows(1)))
        assert not res.cached
        assert (
            sum(
                _sample(reg3, "infleet_cache_errors_total", mode="output", kind=k)
                for k in ("connection", "timeout", "redis")
            )
            == 1
        )
        await plain.close()
