"""Attention over the paged KV cache: store the step's keys/values in their slots, then
torch SDPA over each sequence's blocks gathered into a dense tensor.

A step's tokens come packed: first the decode tokens (one per sequence, attended to
in groups of similar context length, block tables padded within a group), then each
prompt chunk (one SDPA call per chunk, over that sequence's own blocks only). The
gather copies every block a step reads once per layer; a fused paged kernel would read
them in place.
docs/generation.md says what this costs.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F


@dataclass
class PrefillChunk:
    """One sequence's prompt chunk: tokens [start, start + length) of the packed step."""

    start: int
    length: int
    blocks: torch.Tensor  # [blocks covering the context]
    mask: torch.Tensor  # [1, 1, length, blocks * block_size] bool


@dataclass
class DecodeGroup:
    """Decodes attended together: packed tokens [start, start + n), one per sequence,
    block tables [n, width] padded with block 0, ``lens`` the tokens after this step."""

    start: int
    tables: torch.Tensor
    lens: torch.Tensor
    mask: torch.Tensor | None = None

    @property
    def n(self) -> int:
        return int(self.tables.shape[0])

    def build_mask(self, block_size: int) -> None:
        """[n, 1, 1, width * block_size] bool: a decode sees its own context only."""
        kpos = torch.arange(self.tables.shape[1] * block_size, device=self.tables.device)
        self.mask = (kpos[None, :] < self.lens[:, None])[:, None, None, :]


@dataclass
class AttentionBatch:
    """Where one step's tokens go: built by the model runner, read by every layer.

    ``slot_mapping[t]`` is the cache slot (block * block_size + offset) of packed
    token t. Decodes come first, in groups of similar context length (each group is
    padded to its longest member only), then the prompt chunks."""

    slot_mapping: torch.Tensor
    decodes: list[DecodeGroup] = field(default_factory=list)
    prefills: list[PrefillChunk] = field(default_factory=list)

    def build_mask(self, block_size: int) -> None:
        for group in self.decodes:
            group.build_mask(block_size)


def prefill_mask(start: int, length: int, context: int, device: torch.device) -> torch.Tensor:
    """Causal mask of a chunk whose first token sits at position ``start``."""
    qpos = torch.arange(start, start + length, device=device)
    kpos = torch.arange(context, device=device)
    return (kpos[None, :] <= qpos[:, None])[None, None]


def store_kv(
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    slots: torch.Tensor,
) -> None:
    """Write [tokens, kv_heads, head_dim] keys/values into their cache slots."""
    kv_heads, dim = k.shape[1], k.shape[2]
    k_cache.view(-1, kv_heads, dim).index_copy_(0, slots, k)
    v_cache.view(-1, kv_heads, dim).index_copy_(0, slots, v)


def _attend(
    q: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    blocks: torch.Tensor,
    mask: torch.Tensor | None,
    b: int,
    kv_heads: int,
) -> torch.Tensor:
    """q [b, heads, queries, dim] over the gathered blocks [b * n] -> same shape."""
    dim = q.shape[-1]
    # index_select: ~10x faster than cache[tables] (advanced indexing) on CPU.
    keys = k_cache.index_select(0, blocks).view(b, -1, kv_heads, dim).transpose(1, 2)
    values = v_cache.index_select(0, blocks).view(b, -1, kv_heads, dim).transpose(1, 2)
    return F.scaled_dot_product_attention(
        q, keys, values, attn_mask=mask, enable_gqa=q.shape[1] != kv_heads
    )


def paged_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    k_cache: torch.Tensor,
    v_cache: torch.Tensor,
    batch: AttentionBatch,
) -> torch.Tensor:
    """q [T, heads, dim], k/v [T, kv_heads, dim] -> [T, heads * dim]."""
    store_kv(k, v, k_cache, v_cache, batch.slot_mapping)
    heads, dim, kv_heads = q.shape[1], q.shape[2], k.shape[1]
    outs = []
    for group in batch.decodes:
        n = group.n
        qd = q[group.start : group.start + n].view(n, heads, 1, dim)
        out = _attend(qd, k_cache, v_cache, group.tables.view(-1), group.mask, n, kv_heads)
        outs.append(out.reshape(n, heads * dim))
    for chunk in batch.prefills:
        qp = q[chunk.start : chunk.start + chunk.length].transpose(0, 1).unsqueeze(0)
        out = _attend(qp, k_cache, v_cache, chunk.blocks, chunk.mask, 1, kv_heads)
        outs.append(out[0].transpose(0, 1).reshape(chunk.length, heads * dim))
    return outs[0] if len(outs) == 1 else torch.cat(outs)
