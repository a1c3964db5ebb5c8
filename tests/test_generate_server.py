"""The generation worker as a real process (``infleet-worker`` dispatching on a
builtin://llama source) against the real ``openai`` client, Triton's generate
extension, Prometheus metrics, disconnects and SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import queue
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import openai
import pytest

from generate_fixtures import save_tiny_checkpoint
from infleet_worker.generate.tokenizer import HFTokenizer
from serverproc import free_port, stop_process, wait_http_ready
from test_generate_tokenizer import MESSAGES, TEMPLATE, word_level


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    http: int
    metrics: int
    grpc: int

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.http}"

    def client(self) -> openai.OpenAI:
        return openai.OpenAI(base_url=self.base + "/v1", api_key="none", max_retries=0)

    def metric(self, name: str, label: str = "") -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics}/metrics") as r:
            for line in r.read().decode().splitlines():
                if line.startswith(name + "{") and label in line:
                    return float(line.rsplit(" ", 1)[1])
        raise KeyError(name)

    def post(self, path: str, body: dict) -> tuple[int, bytes]:
        req = urllib.request.Request(
            self.base + path, json.dumps(body).encode(), {"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as e:
            return e.code, e.read()


def start_server(
    drain: float = 0.0, source: str = "builtin://llama", params: tuple[str, ...] = ()
) -> Server:
    """``params``: more ``--model-param`` values, e.g. ``("maxNumSeqs=4",)``."""
    http, metrics, grpc = free_port(), free_port(), free_port()
    cmd = [
        sys.executable, "-m", "infleet_worker.cli",
        "--model-source", source, "--model-name", "llama",
        "--host", "127.0.0.1", "--http-port", str(http), "--metrics-port", str(metrics),
        "--grpc-port", str(grpc), "--device", "cpu", "--drain-seconds", str(drain),
        "--model-param", "maxModelLen=256",
    ]  # fmt: skip
    for param in params:
        cmd += ["--model-param", param]
    proc = subprocess.Popen(cmd, env={**os.environ, "OMP_NUM_THREADS": "1"})
    try:
        wait_http_ready(http, proc, timeout=90)
    except BaseException:
        stop_process(proc)
        raise
    return Server(proc, http, metrics, grpc)


@pytest.fixture(scope="module")
def server() -> Iterator[Server]:
    s = start_server()
    yield s
    stop_process(s.proc)


def test_openai_completions(server: Server) -> None:
    c = server.client()
    r = c.completions.create(model="llama", prompt="Hello", max_tokens=8, temperature=0, logprobs=1)
    assert r.choices[0].finish_reason in ("length", "stop")
    assert r.usage is not None and r.usage.prompt_tokens == 6  # BOS + 5 bytes
    assert r.choices[0].logprobs is not None and r.choices[0].logprobs.token_logprobs
    again = c.completions.create(model="llama", prompt="Hello", max_tokens=8, temperature=0)
    assert again.choices[0].text == r.choices[0].text
    chunks = list(
        c.completions.create(
            model="llama", prompt="Hello", max_tokens=8, temperature=0, stream=True
        )
    )
    assert "".join(ch.choices[0].text for ch in chunks) == r.choices[0].text
    assert chunks[-1].choices[0].finish_reason == r.choices[0].finish_reason


def test_openai_chat(server: Server) -> None:
    c = server.client()
    msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}]
    r = c.chat.completions.create(model="llama", messages=msgs, max_tokens=6, temperature=0, seed=3)
    assert r.choices[0].message.role == "assistant"
    stream = c.chat.completions.create(
        model="llama", messages=msgs, max_tokens=6, temperature=0, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == r.choices[0].message.content
    assert (
        chunks[-1].usage is not None
        and chunks[-1].usage.completion_tokens == r.usage.completion_tokens
    )  # type: ignore[union-attr]
    assert [m.id for m in c.models.list().data] == ["llama"]


def test_bad_input_named(server: Server) -> None:
    c = server.client()
    with pytest.raises(openai.BadRequestError, match="context is 256 tokens"):
        c.completions.create(model="llama", prompt="x" * 300, max_tokens=4)
    with pytest.raises(openai.BadRequestError, match="temperature"):
        c.completions.create(model="llama", prompt="x", temperature=3.5)
    with pytest.raises(openai.BadRequestError, match="unknown parameters: mirostat"):
        c.completions.create(model="llama", prompt="x", extra_body={"mirostat": 2})
    with pytest.raises(openai.BadRequestError, match="presence_penalty"):
        c.completions.create(model="llama", prompt="x", presence_penalty=1.0)
    status, body = server.post(
        "/v1/completions", {"prompt": "x" * 200, "max_tokens": 500, "temperature": 0}
    )
    doc = json.loads(body)
    assert status == 200 and "clipped to 55" in doc["warnings"][0]
    assert doc["usage"]["completion_tokens"] <= 55


def test_triton_generate(server: Server) -> None:
    status, body = server.post(
        "/v2/models/llama/generate",
        {"text_input": "Hi", "parameters": {"max_tokens": 5, "temperature": 0}},
    )
    assert status == 200 and json.loads(body)["model_name"] == "llama"
    status, body = server.post(
        "/v2/models/llama/generate_stream", {"text_input": "Hi", "max_tokens": 5, "temperature": 0}
    )
    events = [
        json.loads(line[6:]) for line in body.decode().splitlines() if line.startswith("data: ")
    ]
    assert status == 200 and events[-1]["finish_reason"] in ("length", "stop")
    status, _ = server.post("/v2/models/llama/generate", {"text_input": "Hi", "top_p": 0})
    assert status == 400


def test_tritonclient_grpc_stream(server: Server) -> None:
    """tritonclient's decoupled streaming client: one response per token, the last
    one final; the texts join to what the HTTP generate route answers."""
    import tritonclient.grpc as grpcclient

    responses: queue.Queue[Any] = queue.Queue()
    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.grpc}")
    assert client.is_server_ready() and client.is_model_ready("llama")
    text = grpcclient.InferInput("text_input", [1], "BYTES")
    text.set_data_from_numpy(np.array([b"Hi"], dtype=object))
    client.start_stream(callback=lambda result, error: responses.put((result, error)))
    try:
        client.async_stream_infer("llama", [text], request_id="r1",
                                  parameters={"max_tokens": 6, "temperature": 0.0})  # fmt: skip
        parts: list[bytes] = []
        while True:
            result, error = responses.get(timeout=30)
            assert error is None
            response = result.get_response()
            assert response.id == "r1"
            parts.append(result.as_numpy("text_output")[0])
            if response.parameters["triton_final_response"].bool_param:
                break
        assert len(parts) == 6
        client.async_stream_infer("llama", [text], parameters={"temperature": 9.0})
        result, error = responses.get(timeout=30)
        assert error is not None and "temperature" in str(error)
    finally:
        client.stop_stream()
        client.close()
    _, body = server.post(
        "/v2/models/llama/generate", {"text_input": "Hi", "max_tokens": 6, "temperature": 0}
    )
    assert b"".join(parts).decode() == json.loads(body)["text_output"]


def test_disconnect_frees_blocks(server: Server) -> None:
    c = server.client()
    aborted = server.metric("infleet_generate_finished_sequences_total", 'reason="abort"')
    stream = c.completions.create(
        model="llama",
        prompt="Hi",
        max_tokens=250,
        temperature=0,
        stream=True,
        extra_body={"ignore_eos": True},
    )
    next(iter(stream))
    stream.close()  # the client goes away mid-generation
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and server.metric("infleet_generate_running_sequences") > 0:
        time.sleep(0.05)
    assert server.metric("infleet_generate_running_sequences") == 0
    assert server.metric("infleet_generate_kv_blocks_used") == 0
    after = server.metric("infleet_generate_finished_sequences_total", 'reason="abort"')
    assert after == aborted + 1
    assert server.metric("infleet_generate_time_to_first_token_seconds_count") > 0


def test_capacity_gauges_after_warm_up(server: Server) -> None:
    """The operator's contract (status.generation): KV capacity in tokens, context length."""
    blocks = server.metric("infleet_generate_kv_blocks")
    assert blocks > 0
    assert server.metric("infleet_generate_kv_capacity_tokens") == blocks * 16  # blockSize
    assert server.metric("infleet_generate_context_length_tokens") == 256  # maxModelLen


def test_checkpoint_directory_serves_chat(tmp_path: Path) -> None:
    """A transformers checkpoint with tokenizer.json and a chat template, as on a PVC."""
    save_tiny_checkpoint(tmp_path)
    word_level(tmp_path)
    (tmp_path / "tokenizer_config.json").write_text(
        json.dumps({"bos_token": "<s>", "chat_template": TEMPLATE})
    )
    s = start_server(source=f"file://{tmp_path}")
    try:
        c = s.client()
        r = c.chat.completions.create(
            model="llama", messages=MESSAGES, max_tokens=5, temperature=0, logprobs=True
        )
        tok = HFTokenizer(tmp_path, bos_id=0, eos_ids=(1,))
        rendered = tok.encode(tok.chat_prompt(MESSAGES)[0], add_special=False)
        assert r.usage is not None and r.usage.prompt_tokens == len(rendered)
        assert r.choices[0].logprobs is not None and r.choices[0].logprobs.content
        with pytest.raises(openai.BadRequestError, match="context is 256 tokens"):
            c.completions.create(model="llama", prompt=[3] * 256, max_tokens=1)
    finally:
        stop_process(s.proc)


def test_sigterm_drains_and_exits_zero() -> None:
    s = start_server(drain=0.5)
    try:
        stream = s.client().completions.create(
            model="llama", prompt="Hi", max_tokens=60, temperature=0, stream=True,
            extra_body={"ignore_eos": True},
        )  # fmt: skip
        first = next(iter(stream))
        s.proc.send_signal(signal.SIGTERM)
        rest = list(stream)  # the running sequence finishes
        assert rest[-1].choices[0].finish_reason == "length" and first
        assert s.proc.wait(30) == 0
    finally:
        stop_process(s.proc)


async def test_drain_refuses_new_sequences_and_finishes_running() -> None:
    """After the drain window: new requests get 503, running streams finish."""
    import aiohttp

    from infleet_worker.config import WorkerConfig
    from infleet_worker.generate.server import serve_generate

    cfg = WorkerConfig.model_validate(
        {
            "model": {
                "name": "llama",
                "source": "builtin://llama",
                "parameters": {"maxModelLen": "512"},
            },
            "engine": {"device": "cpu"},
            "server": {"host": "127.0.0.1", "httpPort": 0, "grpcPort": 0, "metricsPort": 0},
        }
    )
    async with serve_generate(cfg) as server, aiohttp.ClientSession() as http:
        base = f"http://127.0.0.1:{server.http_port}"
        body = {
            "prompt": "Hi",
            "max_tokens": 500,
            "temperature": 0,
            "stream": True,
            "ignore_eos": True,
        }
        async with http.post(base + "/v1/completions", json=body) as stream:
            assert stream.status == 200
            await stream.content.readline()  # the first token is out
            drain = asyncio.create_task(server.drain(0))
            await asyncio.sleep(0)
            async with http.post(base + "/v1/completions", json={"prompt": "x"}) as late:
                assert late.status == 503
            async with http.get(base + "/v2/health/ready") as ready:
                assert ready.status == 503
            events = [line async for line in stream.content if line.startswith(b"data: {")]
            assert b'"finish_reason":"length"' in events[-1]
        await asyncio.wait_for(drain, 10)
