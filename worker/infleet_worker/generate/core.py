"""The engine core, synchronous: one ``step()`` is schedule -> run -> postprocess.

Driven by the loop thread of engine.py in serving, directly by tests. Every output
goes to the sequence's sink (a callable) as soon as the step produced it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

import torch

from infleet_worker.generate.block_manager import BlockManager
from infleet_worker.generate.config import EngineOptions
from infleet_worker.generate.detok import Detokenizer
from infleet_worker.generate.llama import LlamaForCausalLM
from infleet_worker.generate.metrics import GenerateMetrics
from infleet_worker.generate.model_runner import ModelRunner
from infleet_worker.generate.sampler import sample
from infleet_worker.generate.scheduler import ScheduledBatch, Scheduler
from infleet_worker.generate.sequence import SamplingParams, Sequence, TokenOutput
from infleet_worker.generate.tokenizer import Tokenizer

log = logging.getLogger(__name__)

Sink = Callable[[TokenOutput], None]


@dataclass
class Request:
    seq: Sequence
    detok: Detokenizer
    sink: Sink
    last_token_at: float | None = None


class Speculator(Protocol):
    """A draft model's step (speculative.py): a decodes-only step, or following one."""

    def applies(self, batch: ScheduledBatch) -> bool: ...
    def step(self, batch: ScheduledBatch) -> int: ...
    def follow(self, batch: ScheduledBatch) -> None: ...


class EngineCore:
    def __init__(
        self,
        model: LlamaForCausalLM,
        tokenizer: Tokenizer,
        opts: EngineOptions,
        num_blocks: int,
        device: torch.device,
        dtype: torch.dtype,
        metrics: GenerateMetrics | None = None,
    ) -> None:
        self.model = model
        self.tokenizer = tokenizer
        self.opts = opts
        cfg = model.config
        self.max_model_len = min(opts.max_model_len or cfg.max_positions, cfg.max_positions)
        self.blocks = BlockManager(num_blocks, opts.block_size, opts.prefix_caching)
        if self.blocks.blocks_for(self.max_model_len) > num_blocks:
            raise ValueError(
                f"the KV cache ({num_blocks} blocks of {opts.block_size}) cannot hold one "
                f"sequence of the context length {self.max_model_len}: give it more memory "
                "or lower maxModelLen"
            )
        self.scheduler = Scheduler(opts, self.blocks)
        self.runner = ModelRunner(model, num_blocks, opts.block_size, device, dtype)
        self.eos_ids = set(cfg.eos_token_ids) | set(tokenizer.eos_ids)
        self.requests: dict[int, Request] = {}
        self.speculative: Speculator | None = None  # speculative.py attaches itself
        self.metrics = metrics
        if metrics is not None:
            metrics.bind(
                running=lambda: len(self.scheduler.running),
                waiting=lambda: len(self.scheduler.waiting),
                kv_used=lambda: self.blocks.num_blocks - self.blocks.num_free,
                kv_total=self.blocks.num_blocks,
                hit_ratio=lambda: self.blocks.hit_tokens / max(1, self.blocks.query_tokens),
                block_size=opts.block_size,
                context_length=self.max_model_len,
            )

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def make_sequence(self, prompt_ids: list[int], params: SamplingParams) -> Sequence:
        """A sequence for an already validated prompt; max_tokens clipped to the context."""
        if not prompt_ids or len(prompt_ids) >= self.max_model_len:
            raise ValueError(
                f"the prompt has {len(prompt_ids)} tokens; the context is "
                f"{self.max_model_len} tokens (prompt + at least one generated)"
            )
        o = self.opts
        timeout = o.default_timeout_s if params.timeout_s is None else params.timeout_s
        seq = Sequence(
            list(prompt_ids),
            params,
            priority=params.priority or o.default_priority,
            deadline=time.monotonic() + timeout if timeout > 0 else None,
        )
        seq.max_tokens = min(params.max_tokens, self.max_model_len - len(prompt_ids))
        seq.max_tokens = min(seq.max_tokens, o.max_tokens or seq.max_tokens)
        return seq

    def add_sequence(self, seq: Sequence, sink: Sink) -> None:
        self.requests[seq.seq_id] = Request(seq, Detokenizer(self.tokenizer, seq.params.stop), sink)
        self.scheduler.add(seq)

    def abort(self, seq_id: int, reason: str = "abort", error: str | None = None) -> None:
        req = self.requests.pop(seq_id, None)
        if req is None:
            return
        self.scheduler.remove(req.seq)
        req.sink(TokenOutput(None, "", finish_reason=reason, error=error))
        if self.metrics is not None:
            self.metrics.finished[reason].inc()

    def abort_all(self, reason: str, error: str | None = None) -> None:
        for seq_id in list(self.requests):
            self.abort(seq_id, reason, error)

    def step(self) -> int:
        """One iteration; returns the tokens it computed (0 = nothing to run)."""
        for seq in self.scheduler.expire():
            self.requests[seq.seq_id].seq.finish_reason = "timeout"
            self.abort(seq.seq_id, "timeout", "timed out waiting for a free slot in the batch")
        preempted = self.scheduler.preemptions
        batch = self.scheduler.schedule()
        if self.metrics is not None and self.scheduler.preemptions > preempted:
            self.metrics.preemptions.inc(self.scheduler.preemptions - preempted)
        if not batch.seqs:
            return 0
        if self.metrics is not None:
            self.metrics.observe_step(len(batch.seqs))
        if self.speculative is not None and self.speculative.applies(batch):
            return self.speculative.step(batch)
        logits, sampling = self.runner.run_model(batch)
        if self.speculative is not None:
            self.speculative.follow(batch)
        choices = []
        if logits is not None:
            choices = sample(logits, [s.params for s in sampling], [s.generator for s in sampling])
        self.postprocess(batch, sampling, choices)
        return batch.num_tokens

    def postprocess(
        self,
        batch: ScheduledBatch,
        sampling: list[Sequence],
        choices: list[tuple[int, float | None, dict[int, float] | None]],
    ) -> None:
        now = time.monotonic()
        for seq, n in zip(batch.seqs, batch.num_new, strict=True):
            seq.num_computed_tokens += n
            self.blocks.cache_full_blocks(seq)
        for seq, (token, logprob, top) in zip(sampling, choices, strict=True):
            self.emit(self.requests[seq.seq_id], token, logprob, top, now)

    def emit(
        self,
        req: Request,
        token: int,
        logprob: float | None = None,
        top: dict[int, float] | None = None,
        now: float | None = None,
    ) -> bool:
        """Append one sampled token to req's sequence and stream it; True if it finished."""
        seq = req.seq
        seq.token_ids.append(token)
        self.record_token(req, time.monotonic() if now is None else now)
        stop_token = not seq.params.ignore_eos and token in self.eos_ids
        stop_token = stop_token or token in seq.params.stop_token_ids
        ids = seq.output_ids[:-1] if stop_token else seq.output_ids
        text, stopped = req.detok.update(ids)
        reason = "stop" if stop_token or stopped else None
        if reason is None and seq.num_output_tokens >= seq.max_tokens:
            reason = "length"
        if reason is not None:
            text += req.detok.flush()
        req.sink(TokenOutput(token, text, logprob, top, finish_reason=reason))
        if reason is not None:
            self.finish(req, reason)
        return reason is not None

    def record_token(self, req: Request, now: float) -> None:
        m = self.metrics
        if m is None:
            return
        if req.last_token_at is None:
            m.ttft.observe(now - req.seq.arrival)
            m.prompt_tokens.inc(req.seq.num_prompt_tokens)
            m.prefix_queries.inc(req.seq.num_prompt_tokens)
            m.prefix_hits.inc(req.seq.num_cached_tokens)
        else:
            m.itl.observe(now - req.last_token_at)
        m.generation_tokens.inc()
        req.last_token_at = now

    def finish(self, req: Request, reason: str) -> None:
        req.seq.finish_reason = reason
        self.scheduler.remove(req.seq)
        del self.requests[req.seq.seq_id]
        if self.metrics is not None:
            self.metrics.finished[reason].inc()
