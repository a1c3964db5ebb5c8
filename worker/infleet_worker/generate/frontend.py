"""What every generation route shares: admission (Ready, draining, queue full), the
request metrics, prompt encoding, and the engine's token stream as HTTP errors."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncGenerator, Iterator
from dataclasses import dataclass

from prometheus_client import Gauge

from infleet_worker.generate.engine import EngineDead, GenerateEngine, QueueFull
from infleet_worker.generate.output_cache import GenerationCache
from infleet_worker.generate.params import BadRequest, check_prompt
from infleet_worker.generate.sequence import SamplingParams, TokenOutput
from infleet_worker.generate.tokenizer import Tokenizer
from infleet_worker.metrics import RequestMetrics


class Unavailable(Exception):
    """503: draining, not ready, queue full, or timed out waiting."""


class EngineFailed(Exception):
    """500: the engine failed this request."""


@dataclass
class Outcome:
    value: str = "success"


class Frontend:
    def __init__(
        self,
        engine: GenerateEngine,
        tokenizer: Tokenizer,
        model: str,
        version: str,
        metrics: RequestMetrics,
        queue_depth: Gauge,
        ready_gauge: Gauge,
        priority_levels: int = 1,
        default_max_tokens: int = 16,
    ) -> None:
        self.engine = engine
        self.tokenizer = tokenizer
        self.model = model
        self.version = version
        self.metrics = metrics
        self.ready_gauge = ready_gauge
        self.cache: GenerationCache | None = None  # cache.mode output (output_cache.py)
        self.priority_levels = priority_levels
        self.default_max_tokens = default_max_tokens
        self.ready = False
        self.accepting = True
        self.inflight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        queue_depth.set_function(lambda: len(engine.core.scheduler.waiting))
        metrics.bind_inflight(lambda: self.inflight)

    @property
    def max_model_len(self) -> int:
        return self.engine.max_model_len

    def set_ready(self, ready: bool) -> None:
        self.ready = ready
        self.ready_gauge.set(1 if ready else 0)

    async def wait_idle(self) -> None:
        await self._idle.wait()

    @contextlib.contextmanager
    def request(self) -> Iterator[Outcome]:
        """Count one request: arrival, in-flight, outcome, latency; 503 when closed."""
        m = self.metrics
        m.arrivals.inc()
        if not self.accepting:
            m.requests["rejected"].inc()
            raise Unavailable("the worker is shutting down and takes no new requests")
        self.inflight += 1
        self._idle.clear()
        outcome = Outcome()
        start = time.perf_counter()
        try:
            yield outcome
        except BadRequest:
            outcome.value = "invalid"
            raise
        except Unavailable:
            outcome.value = "rejected" if outcome.value == "success" else outcome.value
            raise
        except BaseException:
            outcome.value = "error" if outcome.value == "success" else outcome.value
            raise
        finally:
            self.inflight -= 1
            if self.inflight == 0:
                self._idle.set()
            m.requests[outcome.value].inc()
            if outcome.value == "success":
                m.latency.observe(time.perf_counter() - start)

    def encode(self, prompt: str | list[int], add_special: bool = True) -> list[int]:
        if isinstance(prompt, str):
            ids = self.tokenizer.encode(prompt, add_special)
        else:
            vocab = self.engine.core.model.config.vocab_size
            bad = [t for t in prompt if not 0 <= t < vocab]
            if bad:
                raise BadRequest(f"token ids {bad[:5]} are outside the vocabulary [0, {vocab})")
            ids = list(prompt)
        check_prompt(len(ids), self.max_model_len)
        return ids

    async def stream(
        self, ids: list[int], params: SamplingParams, outcome: Outcome
    ) -> AsyncGenerator[TokenOutput, None]:
        """The engine's outputs (or the output cache's replay of them); errors before the
        first token raise (-> a status)."""
        computed = self.generate(ids, params, outcome)
        source = computed if self.cache is None else self.cache.stream(ids, params, computed)
        async with contextlib.aclosing(source):
            async for out in source:
                yield out

    async def generate(
        self, ids: list[int], params: SamplingParams, outcome: Outcome
    ) -> AsyncGenerator[TokenOutput, None]:
        try:
            gen = self.engine.generate(ids, params)
            async with contextlib.aclosing(gen):
                async for out in gen:
                    if out.finish_reason == "timeout":
                        outcome.value = "timeout"
                        raise Unavailable(out.error or "timed out")
                    if out.finish_reason in ("error", "abort") and out.error:
                        outcome.value = "error"
                        raise EngineFailed(out.error)
                    yield out
        except QueueFull as e:
            raise Unavailable(str(e)) from None
        except EngineDead as e:
            raise EngineFailed(str(e)) from None
        except ValueError as e:
            raise BadRequest(str(e)) from None
