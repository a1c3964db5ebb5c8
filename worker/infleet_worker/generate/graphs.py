"""CUDA graphs of decode steps (one new token per sequence), one per batch bucket and
context width (the gather reads a graph's whole width, so short contexts get narrow
graphs: 256, 1,024 and 4,096 tokens).

Each graph reads static buffers (token ids, positions, slots, block tables padded to
its width, context lengths): a step copies its values in and replays. Padded rows
write to a scratch block past the managed ones and are discarded."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from infleet_worker.generate.attention import AttentionBatch, DecodeGroup
from infleet_worker.generate.llama import LlamaForCausalLM
from infleet_worker.generate.scheduler import ScheduledBatch


class DecodeGraphs:
    def __init__(
        self, model: LlamaForCausalLM, device: torch.device, block_size: int, scratch: int
    ) -> None:
        self.model = model
        self.device = device
        self.block_size = block_size
        self.scratch = scratch  # block id of the scratch block
        self.replays: dict[tuple[int, int], Callable[[], None]] = {}
        self._keep: list[torch.cuda.CUDAGraph] = []
        self._pool: Any = None
        self.logits: dict[tuple[int, int], torch.Tensor] = {}
        self.buckets: list[int] = []
        self.widths: list[int] = []  # in blocks
        self.tables: dict[int, torch.Tensor] = {}

    @property
    def max_blocks(self) -> int:
        return self.widths[-1] if self.widths else 0

    def capture(self, buckets: list[int], max_blocks: int) -> None:
        top = max(buckets)
        self.buckets = sorted(buckets)
        narrow = {-(-t // self.block_size) for t in (256, 1024)}
        self.widths = sorted({w for w in narrow if w < max_blocks} | {max_blocks})
        dev, long = self.device, torch.long
        self.ids = torch.zeros(top, dtype=long, device=dev)
        self.pos = torch.zeros(top, dtype=long, device=dev)
        self.slots = torch.full((top,), self.scratch * self.block_size, dtype=long, device=dev)
        self.ctx = torch.ones(top, dtype=long, device=dev)
        for w in reversed(self.widths):
            self.tables[w] = torch.full((top, w), self.scratch, dtype=long, device=dev)
            for b in reversed(self.buckets):
                group = DecodeGroup(0, self.tables[w][:b], self.ctx[:b])
                attn = AttentionBatch(self.slots[:b], [group])
                self.replays[b, w], self.logits[b, w] = self.record(b, attn)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def record(self, b: int, attn: AttentionBatch) -> tuple[Callable[[], None], torch.Tensor]:
        """Capture one decode forward as a CUDA graph: (replay, its logits buffer).
        Graphs share one memory pool (captured largest first)."""
        for _ in range(2):  # warm up kernels (and cuBLAS workspaces) off the graph
            self._forward(b, attn)
        torch.cuda.synchronize(self.device)
        graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(graph, pool=self._pool):
            logits = self._forward(b, attn)
        self._pool = graph.pool()
        self._keep.append(graph)
        return graph.replay, logits

    @torch.inference_mode()
    def _forward(self, b: int, attn: AttentionBatch) -> torch.Tensor:
        attn.build_mask(self.block_size)
        hidden = self.model(self.ids[:b], self.pos[:b], attn)
        return self.model.compute_logits(hidden)

    def bucket(self, n: int) -> int | None:
        return min((b for b in self.buckets if b >= n), default=None)

    def width(self, blocks: int) -> int | None:
        return min((w for w in self.widths if w >= blocks), default=None)

    def fits(self, batch: ScheduledBatch) -> bool:
        """Decode-only (one token each, every one sampling), within a bucket and the
        graphs' context."""
        return (
            self.bucket(len(batch.seqs)) is not None
            and all(
                n == 1 and s.num_computed_tokens + 1 == s.num_tokens
                for s, n in zip(batch.seqs, batch.num_new, strict=True)
            )
            and all(len(s.block_table) <= self.max_blocks for s in batch.seqs)
        )

    def replay(self, batch: ScheduledBatch) -> torch.Tensor:
        n = len(batch.seqs)
        b = self.bucket(n)
        w = self.width(max(len(s.block_table) for s in batch.seqs))
        assert b is not None and w is not None
        bs = self.block_size
        ids, pos, slots, ctx = [], [], [], []
        tables = torch.full((b, w), self.scratch, dtype=torch.long)
        for i, seq in enumerate(batch.seqs):
            p = seq.num_computed_tokens
            ids.append(seq.token_ids[p])
            pos.append(p)
            slots.append(seq.block_table[p // bs] * bs + p % bs)
            ctx.append(p + 1)
            tables[i, : len(seq.block_table)] = torch.tensor(seq.block_table)
        pad = b - n
        self.ids[:b].copy_(torch.tensor(ids + [0] * pad), non_blocking=True)
        self.pos[:b].copy_(torch.tensor(pos + [0] * pad), non_blocking=True)
        self.slots[:b].copy_(torch.tensor(slots + [self.scratch * bs] * pad), non_blocking=True)
        self.ctx[:b].copy_(torch.tensor(ctx + [1] * pad), non_blocking=True)
        self.tables[w][:b].copy_(tables, non_blocking=True)
        self.replays[b, w]()
        return self.logits[b, w][:n]
