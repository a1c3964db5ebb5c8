"""Speculative decoding with a draft model: the draft proposes k tokens one at a time,
the target verifies them in one forward over the k + 1 positions, and rejection.py
says which to keep (greedy: the target's argmax token for token; sampled: the
target's distribution exactly).

Both models index the same block tables (one BlockManager): the draft has its own KV
tensors of the same block count and size, so a slot means the same position in both.
After a step the rejected positions are rolled back: the target's computed tokens
end at the last accepted token, blocks allocated past it go back to the pool (no
prefix-cache hash is published for them), and the draft's own computed count
(``done``) is cut back the same way; stale keys/values past it are overwritten later.
On steps that are not all decodes (prompt chunks in the batch) the target runs as
usual and the draft follows over the same tokens so its cache stays complete.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

import torch

from infleet_worker.generate.chunks import Chunk, release_tail, run_chunks
from infleet_worker.generate.llama import LlamaForCausalLM
from infleet_worker.generate.model_runner import ModelRunner
from infleet_worker.generate.rejection import accept_greedy, accept_sampled
from infleet_worker.generate.sampler import _filter
from infleet_worker.generate.scheduler import ScheduledBatch
from infleet_worker.generate.sequence import SamplingParams, Sequence
from infleet_worker.generate.spec_metrics import SpecMetrics, SpecStats
from infleet_worker.generate.spec_policy import DraftLength

if TYPE_CHECKING:
    from infleet_worker.generate.core import EngineCore


def draw(row: torch.Tensor, params: SamplingParams) -> torch.Tensor:
    """The filtered distribution (temperature, top-k, top-p) of one row, float32 CPU."""
    return _filter(row.float().cpu(), params).softmax(-1)


class SpeculativeDecoder:
    def __init__(
        self,
        core: EngineCore,
        draft: LlamaForCausalLM,
        num_tokens: int,
        metrics: SpecMetrics | None = None,
        adaptive: bool = True,
    ) -> None:
        target = core.model.config
        if draft.config.vocab_size != target.vocab_size:
            raise ValueError(
                f"the draft's vocabulary ({draft.config.vocab_size}) differs from the "
                f"target's ({target.vocab_size}): they must share the tokenizer"
            )
        if draft.config.max_positions < core.max_model_len:
            raise ValueError(
                f"the draft's context ({draft.config.max_positions}) is shorter than the "
                f"served context ({core.max_model_len})"
            )
        if num_tokens < 1:
            raise ValueError(f"speculative tokens per step must be >= 1, got {num_tokens}")
        self.core = core
        self.draft = draft
        self.policy = DraftLength(num_tokens, adaptive)
        self.k = num_tokens  # this step's (applies() chooses it)
        self.plain_started = 0.0
        self.device = core.runner.device
        dtype = next(draft.parameters()).dtype
        self.block_size = core.blocks.block_size
        self.runner = ModelRunner(
            draft, core.blocks.num_blocks, self.block_size, self.device, dtype
        )
        self.done: dict[int, int] = {}  # seq id -> tokens whose draft keys/values are cached
        self.stats = SpecStats()
        self.metrics = metrics
        if metrics is not None:
            metrics.bind(self.stats)

    def applies(self, batch: ScheduledBatch) -> bool:
        """Speculate on steps of decodes alone, when the policy's k is not 0."""
        if not self.decodes_only(batch):
            return False
        self.k = self.policy.choose()
        self.plain_started = time.perf_counter()
        return self.k > 0

    @staticmethod
    def decodes_only(batch: ScheduledBatch) -> bool:
        return all(
            n == 1 and s.num_computed_tokens + 1 == s.num_tokens
            for s, n in zip(batch.seqs, batch.num_new, strict=True)
        )

    def _draft_start(self, seq: Sequence) -> int:
        return min(self.done.get(seq.seq_id, seq.num_computed_tokens), seq.num_computed_tokens)

    @torch.inference_mode()
    def follow(self, batch: ScheduledBatch) -> None:
        """A plain step ran: the draft computes the same prompt chunks (and any tokens it
        lags by), so the blocks they fill are complete in both caches when published.
        Plain decode steps (k = 0) leave the draft idle: it catches up when it next
        proposes."""
        if self.decodes_only(batch):
            if self.device.type == "cuda":
                torch.cuda.synchronize(self.device)
            self.policy.observe_plain(time.perf_counter() - self.plain_started)
            return
        chunks = []
        for seq, n in zip(batch.seqs, batch.num_new, strict=True):
            start, end = self._draft_start(seq), seq.num_computed_tokens + n
            chunks.append(Chunk(seq, seq.token_ids[start:end], start))
            self.done[seq.seq_id] = end
        run_chunks(self.draft, self.block_size, self.device, chunks)

    def plan(self, seq: Sequence) -> int:
        """Draft tokens for seq this step: k, less near max_tokens, the context or a full
        KV pool, 0 for seeded sampling (whose tokens must not depend on the adaptive k);
        the blocks for its k + 1 positions allocated."""
        core, blocks = self.core, self.core.blocks
        k = min(self.k, seq.max_tokens - seq.num_output_tokens - 1)
        if seq.params.seed is not None and not seq.params.greedy:
            k = 0  # seeded: one draw per token, the same tokens as without a draft
        k = max(0, min(k, core.max_model_len - seq.num_tokens))
        while k > 0 and not blocks.can_append(seq, k + 1):
            k -= 1
        blocks.append_slots(seq, k + 1)
        return k

    @torch.inference_mode()
    def propose(
        self, seqs: list[Sequence], ks: list[int]
    ) -> tuple[list[list[int]], list[list[torch.Tensor]]]:
        """k_i draft tokens per sequence (and the draft's distributions when sampled)."""
        drafts: list[list[int]] = [[] for _ in seqs]
        probs: list[list[torch.Tensor]] = [[] for _ in seqs]
        active = [i for i, k in enumerate(ks) if k > 0]
        chunks = []
        for i in active:
            start = self._draft_start(seqs[i])
            chunks.append(Chunk(seqs[i], seqs[i].token_ids[start:], start))
        j = 0
        while chunks:
            logits = run_chunks(self.draft, self.block_size, self.device, chunks)
            rows = torch.tensor([len(c.ids) for c in chunks]).cumsum(0) - 1
            last = logits[rows.to(self.device)]
            best = last.argmax(-1).tolist()
            chunks, still = [], []
            for r, i in enumerate(active):
                seq = seqs[i]
                token = best[r]
                if not seq.params.greedy:
                    q = draw(last[r], seq.params)
                    token = int(torch.multinomial(q, 1, generator=seq.generator))
                    probs[i].append(q)
                drafts[i].append(token)
                if len(drafts[i]) < ks[i]:
                    chunks.append(Chunk(seq, [token], seq.num_tokens + j))
                    still.append(i)
            active, j = still, j + 1
        for i, k in enumerate(ks):
            if k > 0:
                self.done[seqs[i].seq_id] = seqs[i].num_tokens + k - 1
        return drafts, probs

    @torch.inference_mode()
    def step(self, batch: ScheduledBatch) -> int:
        """One speculative step over a batch of decodes; returns the target's tokens."""
        seqs = batch.seqs
        ks = [self.plan(s) for s in seqs]
        t0 = time.perf_counter()
        drafts, probs = self.propose(seqs, ks)
        t1 = time.perf_counter()
        chunks = [
            Chunk(s, [s.token_ids[-1], *d], s.num_tokens - 1)
            for s, d in zip(seqs, drafts, strict=True)
        ]
        logits = run_chunks(self.core.model, self.block_size, self.device, chunks)
        rows = logits.split([k + 1 for k in ks])
        best = logits.argmax(-1).tolist()  # synchronises the device before timing
        t2 = time.perf_counter()
        accepted = emitted = offset = 0
        for seq, k, d, q, row in zip(seqs, ks, drafts, probs, rows, strict=True):
            if seq.params.greedy:
                tokens = accept_greedy(best[offset : offset + k + 1], d)
            else:
                p = torch.stack([draw(r, seq.params) for r in row])
                qs = torch.stack(q) if q else p[:0]
                tokens = accept_sampled(p, qs, d, seq.generator)
            offset += k + 1
            accepted += len(tokens) - 1
            emitted += len(tokens)
            self.commit(seq, tokens, row)
        self.policy.observe(max(ks), sum(ks), accepted, t1 - t0, t2 - t1)
        self.record(sum(ks), accepted, len(seqs), emitted)
        self.prune()
        return sum(k + 1 for k in ks)

    def commit(self, seq: Sequence, tokens: list[int], logits: torch.Tensor) -> None:
        """Stream the kept tokens; roll the rejected positions back in both caches."""
        core = self.core
        n, m = seq.num_tokens, len(tokens) - 1
        req = core.requests[seq.seq_id]
        logprobs = None
        if seq.params.logprobs is not None:
            logprobs = logits.float().cpu().log_softmax(-1)
        for i, token in enumerate(tokens):
            lp, top = None, None
            if logprobs is not None and seq.params.logprobs is not None:
                lp = float(logprobs[i, token])
                if seq.params.logprobs > 0:
                    vals, ids = torch.topk(logprobs[i], seq.params.logprobs)
                    top = dict(zip(ids.tolist(), vals.tolist(), strict=True))
            if core.emit(req, token, lp, top):
                self.done.pop(seq.seq_id, None)
                return
        done = min(self.done.get(seq.seq_id, n + m), n + m)
        self.done[seq.seq_id] = done
        release_tail(core.blocks, seq, core.blocks.blocks_for(n + m))
        # Publish to the prefix cache only blocks both caches hold (the draft may lag
        # by its last token, computed at its next step).
        seq.num_computed_tokens = done
        core.blocks.cache_full_blocks(seq)
        seq.num_computed_tokens = n + m

    def record(self, draft: int, accepted: int, steps: int, emitted: int) -> None:
        s = self.stats
        s.draft_tokens += draft
        s.accepted_tokens += accepted
        s.verify_steps += steps
        s.emitted_tokens += emitted
        if self.metrics is not None:
            self.metrics.record(draft, accepted, steps, emitted)

    def prune(self) -> None:
        if len(self.done) > 2 * len(self.core.requests) + 64:
            self.done = {i: n for i, n in self.done.items() if i in self.core.requests}
