"""The output cache for deterministic generation, on a real redis-server and the real
``openai`` client: a repeated greedy or seeded request is replayed from the cache as a
stream (same chunks, no engine tokens), unseeded sampling is never cached, a different
prompt or parameter misses, and a Redis that is down is a miss (fail open)."""

from __future__ import annotations

from typing import Any

import aiohttp
import openai

from infleet_worker.config import WorkerConfig
from infleet_worker.generate.output_cache import GenerationCache, decode, encode
from infleet_worker.generate.sequence import SamplingParams, TokenOutput
from infleet_worker.generate.server import serve_generate


def config(url: str) -> WorkerConfig:
    return WorkerConfig.model_validate(
        {
            "model": {"name": "llama", "source": "builtin://llama", "version": "3"},
            "engine": {"device": "cpu", "warmup": False},
            "cache": {"mode": "output", "redis": {"url": url}},
            "server": {"host": "127.0.0.1", "httpPort": 0, "grpcPort": 0, "metricsPort": 0},
        }
    )


async def metric(port: int, name: str) -> float:
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"http://127.0.0.1:{port}/metrics") as r,
    ):
        text = await r.text()
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith(name + "{") or line.startswith(name + " ")
    )


async def chat(client: openai.AsyncOpenAI, **kw: Any) -> list[tuple[str, str | None]]:
    stream = await client.chat.completions.create(
        model="llama",
        messages=[{"role": "user", "content": kw.pop("content", "Hello")}],
        max_tokens=12,
        stream=True,
        extra_body={"ignore_eos": True},
        **kw,
    )
    return [
        (c.choices[0].delta.content or "", c.choices[0].finish_reason)
        async for c in stream
        if c.choices
    ]


async def test_deterministic_requests_replay_from_the_cache(redis_url: str) -> None:
    async with serve_generate(config(redis_url)) as server:
        client = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{server.http_port}/v1", api_key="none", max_retries=0
        )
        port = server.metrics_port
        first = await chat(client, temperature=0)
        tokens = await metric(port, "infleet_generate_generation_tokens_total")
        again = await chat(client, temperature=0)
        assert again == first and len(first) >= 12  # one chunk per token, replayed
        assert await metric(port, "infleet_generate_generation_tokens_total") == tokens
        assert await metric(port, "infleet_cache_hits_total") == 1

        seeded = await chat(client, temperature=1.0, seed=5)
        assert await chat(client, temperature=1.0, seed=5) == seeded
        assert await metric(port, "infleet_cache_hits_total") == 2
        await chat(client, temperature=1.0, seed=6)  # another seed: a miss
        await chat(client, temperature=0, content="Hello!")  # another prompt: a miss
        await chat(client, temperature=0, top_p=0.5)  # greedy ignores top_p: a hit
        assert await metric(port, "infleet_cache_hits_total") == 3

        lookups = await metric(port, "infleet_cache_requests_total")
        await chat(client, temperature=1.0)
        await chat(client, temperature=1.0)  # unseeded sampling: never looked up
        assert await metric(port, "infleet_cache_requests_total") == lookups
        assert await metric(port, "infleet_cache_hits_total") == 3


async def test_redis_down_is_a_miss() -> None:
    async with serve_generate(config("redis://127.0.0.1:1/0")) as server:
        client = openai.AsyncOpenAI(
            base_url=f"http://127.0.0.1:{server.http_port}/v1", api_key="none", max_retries=0
        )
        assert len(await chat(client, temperature=0)) >= 12
        assert len(await chat(client, temperature=0)) >= 12
        assert await metric(server.metrics_port, "infleet_cache_errors_total") >= 1


def test_keys_and_codec() -> None:
    cache = GenerationCache(
        None,  # type: ignore[arg-type]  # key() and the codec need no store
        None,  # type: ignore[arg-type]
        model="m",
        version="1",
        tag="fp32|",
        namespace="ns",
        ttl_s=60,
        max_value_bytes=1 << 20,
    )
    greedy = SamplingParams(max_tokens=8, temperature=0.0)
    assert cache.key([1, 2], greedy) == cache.key([1, 2], SamplingParams(8, 0.0, priority=2))
    assert cache.key([1, 2], greedy) != cache.key([1, 3], greedy)
    assert cache.key([1, 2], greedy) != cache.key([1, 2], SamplingParams(9, 0.0))
    assert cache.key([1, 2], SamplingParams(8, 0.7)) is None
    key = cache.key([1, 2], SamplingParams(8, 0.7, seed=1))
    assert key is not None and key.startswith("ns:gen1:m:1:")
    out = TokenOutput(5, "a", -0.5, {5: -0.5, 7: -1.5}, finish_reason="length")
    assert decode(encode(out)) == out
