"""Forwards over explicit token chunks (speculative decoding's draft proposals and the
target's verification of k + 1 positions: every chunk causal within, over its
sequence's blocks before), and giving back the blocks of rolled-back positions."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infleet_worker.generate.attention import AttentionBatch, PrefillChunk, prefill_mask
from infleet_worker.generate.block_manager import BlockManager
from infleet_worker.generate.llama import LlamaForCausalLM
from infleet_worker.generate.sequence import Sequence


@dataclass
class Chunk:
    seq: Sequence
    ids: list[int]
    start: int  # position of ids[0]


def _long(values: list[int], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


def run_chunks(
    model: LlamaForCausalLM, block_size: int, device: torch.device, chunks: list[Chunk]
) -> torch.Tensor:
    """One forward over every chunk (causal within, over its sequence's blocks before):
    logits [all tokens, vocab] in chunk order."""
    ids: list[int] = []
    pos: list[int] = []
    slots: list[int] = []
    prefills = []
    for c in chunks:
        table, n = c.seq.block_table, len(c.ids)
        used = -(-(c.start + n) // block_size)
        mask = prefill_mask(c.start, n, used * block_size, device)
        prefills.append(PrefillChunk(len(ids), n, _long(table[:used], device), mask))
        ids.extend(c.ids)
        pos.extend(range(c.start, c.start + n))
        slots.extend(table[p // block_size] * block_size + p % block_size for p in pos[-n:])
    batch = AttentionBatch(_long(slots, device), [], prefills)
    return model.compute_logits(model(_long(ids, device), _long(pos, device), batch))


def release_tail(blocks: BlockManager, seq: Sequence, keep: int) -> None:
    """Give back seq's blocks past the first ``keep`` (fresh, unshared, unhashed ones)."""
    while len(seq.block_table) > keep:
        bid = seq.block_table.pop()
        block = blocks.blocks[bid]
        block.ref_count -= 1
        if block.ref_count == 0:
            blocks.free[bid] = None
            blocks.free.move_to_end(bid, last=False)
