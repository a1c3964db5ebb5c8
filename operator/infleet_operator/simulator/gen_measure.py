"""Measure a generating worker for the simulator's ``generate`` profile, over HTTP.

What clients see, so the serving layer's cost (and a speculative draft's gain) is in
the figures: streams ``/v1/completions`` (token-id prompts, ``ignore_eos``, greedy)
and times every streamed token.

- decode step time at ``d`` sequences: ``repeats`` waves of ``d`` streams sent
  together, each a short prompt and ``output`` (> 2 x EDGE) tokens; the mean time
  between the tokens of the wave's middle (pure decoding), pooled over the streams;
- prefill time per token: time to first token of a long prompt minus a short one's,
  over their length difference (one stream, idle worker; medians of a few);
- KV capacity: ``kv_blocks x block_size`` from the model's ``/config``.
"""

from __future__ import annotations

import json
import statistics
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from infleet_operator.simulator.gen_profile import GenerateProfile


@dataclass
class Stream:
    sent: float  # perf_counter when the request went out
    tokens: list[float] = field(default_factory=list)  # perf_counter per streamed token


def stream_one(url: str, model: str, prompt: Sequence[int], max_tokens: int) -> Stream:
    """One streamed completion, timed token by token."""
    body = {
        "model": model,
        "prompt": list(prompt),
        "max_tokens": max_tokens,
        "temperature": 0,
        "ignore_eos": True,
        "stream": True,
    }
    req = urllib.request.Request(
        f"{url.rstrip('/')}/v1/completions",
        json.dumps(body).encode(),
        {"Content-Type": "application/json"},
    )
    out = Stream(time.perf_counter())
    with urllib.request.urlopen(req, timeout=300) as resp:
        for line in resp:
            if line.startswith(b"data: {"):
                out.tokens.append(time.perf_counter())
    if len(out.tokens) != max_tokens:
        raise ValueError(f"expected {max_tokens} streamed tokens, got {len(out.tokens)}")
    return out


def concurrent(
    url: str, model: str, jobs: Sequence[tuple[Sequence[int], int]], streams: int
) -> list[Stream]:
    """``jobs`` (prompt, max_tokens) served by ``streams`` closed-loop clients, in order."""
    results: list[Stream | None] = [None] * len(jobs)
    errors: list[BaseException] = []
    lock = threading.Lock()
    todo = iter(range(len(jobs)))

    def client() -> None:
        while True:
            with lock:
                i = next(todo, None)
            if i is None or errors:
                return
            try:
                results[i] = stream_one(url, model, *jobs[i])
            except BaseException as e:  # surfaced below, in the caller's thread
                errors.append(e)
                return

    threads = [threading.Thread(target=client) for _ in range(streams)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]


def model_config(url: str, model: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{url.rstrip('/')}/v2/models/{model}/config", timeout=10) as r:
        data: dict[str, Any] = json.load(r)
    return data


def prompt_of(n: int, offset: int = 0) -> list[int]:
    """``n`` distinct-ish token ids (no shared prefix with other prompts of the run)."""
    return [1 + (offset * 7919 + 31 * i) % 250 for i in range(n)]


# Tokens left out at each end of a stream: while they flow, the wave's other streams
# are still joining (their prefill and HTTP handling) or already leaving.
EDGE = 4


def measure_generate(
    url: str,
    model: str,
    sizes: Sequence[int] = (1, 2, 4, 8),
    output: int = 64,
    prompts: tuple[int, int] = (8, 128),
    repeats: int = 8,
) -> GenerateProfile:
    cfg = model_config(url, model)
    params = cfg.get("parameters") or {}
    block = int(params.get("block_size", 16))
    kv_tokens = int(params.get("kv_blocks", 0)) * block
    stream_one(url, model, prompt_of(4, 999), 2)  # a first request pays one-off costs
    table = []
    for d in sizes:
        spans = []
        for r in range(repeats):  # waves of d streams that start and end together
            jobs = [(prompt_of(prompts[0], d * 100 + r * d + i), output) for i in range(d)]
            for s in concurrent(url, model, jobs, d):
                spans.append((s.tokens[-EDGE] - s.tokens[EDGE], len(s.tokens) - 2 * EDGE - 1))
        # Pooled over the streams (tokens may arrive in bursts: a speculative step, or one
        # wake-up delivering several steps' tokens) as a time-weighted mean, so a slow
        # spell counts as it does in a run.
        table.append((d, sum(t for t, _ in spans) / sum(n for _, n in spans)))
    short, long_ = prompts
    ttft: dict[int, list[float]] = {short: [], long_: []}
    for i in range(repeats):
        for n in (short, long_):
            s = stream_one(url, model, prompt_of(n, 5000 + 2 * i + n), 1)
            ttft[n].append(s.tokens[0] - s.sent)
    per_token = (statistics.median(ttft[long_]) - statistics.median(ttft[short])) / (long_ - short)
    return GenerateProfile(
        decode_table=tuple(table),
        prefill_seconds_per_token=max(per_token, 0.0),
        kv_capacity_tokens=kv_tokens or GenerateProfile().kv_capacity_tokens,
        block_size=block,
    )
