"""Continuous batching: which sequences run in the next step, and how many tokens each.

Every step has a token budget. Running sequences go first, decodes (one token each)
before prompt chunks, each in priority then arrival order; waiting sequences join
with the budget left, their prompts cut into chunks that fit it (chunked prefill),
so a long prompt never stalls the running decodes. When the KV cache has no block
for a running sequence, the lowest-priority, newest running sequence is preempted:
its blocks are freed and it waits again, to be recomputed from its tokens (its
cached prefix blocks usually survive). Waiting sequences expire after their queue
timeout if no step has started them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from infleet_worker.generate.block_manager import BlockManager
from infleet_worker.generate.config import EngineOptions
from infleet_worker.generate.sequence import Sequence, Status


@dataclass
class ScheduledBatch:
    seqs: list[Sequence] = field(default_factory=list)
    num_new: list[int] = field(default_factory=list)

    def add(self, seq: Sequence, n: int) -> None:
        self.seqs.append(seq)
        self.num_new.append(n)

    @property
    def num_tokens(self) -> int:
        return sum(self.num_new)


def _remaining(seq: Sequence) -> int:
    return seq.num_tokens - seq.num_computed_tokens


class Scheduler:
    def __init__(self, opts: EngineOptions, blocks: BlockManager) -> None:
        self.opts = opts
        self.blocks = blocks
        self.waiting: list[Sequence] = []
        self.running: list[Sequence] = []
        self.preemptions = 0

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.running)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def remove(self, seq: Sequence) -> None:
        """Finish or abort: out of either queue, blocks back to the pool."""
        if seq in self.running:
            self.running.remove(seq)
        elif seq in self.waiting:
            self.waiting.remove(seq)
        self.blocks.free_blocks(seq)
        seq.status = Status.FINISHED

    def expire(self, now: float | None = None) -> list[Sequence]:
        """Waiting sequences past their queue deadline (never started): removed."""
        now = time.monotonic() if now is None else now
        late = [s for s in self.waiting if not s.started and s.deadline and now > s.deadline]
        for seq in late:
            self.remove(seq)
        return late

    def schedule(self) -> ScheduledBatch:
        batch = ScheduledBatch()
        budget = self.opts.max_num_batched_tokens
        decodes = sorted((s for s in self.running if _remaining(s) == 1), key=Sequence.sort_key)
        prefills = sorted((s for s in self.running if _remaining(s) > 1), key=Sequence.sort_key)
        self.running = decodes + prefills
        preempted = False
        i = 0
        while i < len(self.running) and budget > 0:
            seq = self.running[i]
            n = min(_remaining(seq), budget)
            while not self.blocks.can_append(seq, n):
                victim = self.running.pop()
                self.preempt(victim)
                preempted = True
                if victim is seq:
                    break
            if seq.status != Status.RUNNING:
                break
            self.blocks.append_slots(seq, n)
            batch.add(seq, n)
            budget -= n
            i += 1
        if not preempted:
            self.admit(batch, budget)
        return batch

    def admit(self, batch: ScheduledBatch, budget: int) -> None:
        self.waiting.sort(key=Sequence.sort_key)
        while self.waiting and budget > 0 and len(self.running) < self.opts.max_num_seqs:
            seq = self.waiting[0]
            hit = self.blocks.take_cached_prefix(seq)
            n = min(_remaining(seq), budget)
            if not self.blocks.can_append(seq, n):
                self.blocks.free_blocks(seq)
                seq.num_computed_tokens = 0
                break
            self.waiting.pop(0)
            if not seq.started:
                seq.num_cached_tokens = hit
                self.blocks.record_lookup(seq.num_prompt_tokens, hit)
            seq.status, seq.started = Status.RUNNING, True
            self.running.append(seq)
            self.blocks.append_slots(seq, n)
            batch.add(seq, n)
            budget -= n

    def preempt(self, seq: Sequence) -> None:
        """Free seq's blocks and queue it again: it is recomputed from its tokens."""
        self.blocks.free_blocks(seq)
        seq.num_computed_tokens = 0
        seq.status = Status.WAITING
        self.waiting.append(seq)
        self.preemptions += 1
