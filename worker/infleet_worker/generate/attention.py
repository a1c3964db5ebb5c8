"""Attention over the paged KV cache: store the step's keys/values in their slots, then
torch SDPA over each sequence's blocks gathered into a padded dense tensor.

The gather copies every block of every sequence in the step once per layer (it reads
``batch x max_context`` keys and values, padding included); a fused paged kernel
would read each block in place. docs/generation.md measures what this costs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass
class AttentionBatch:
    """Where one step's tokens go: built by the model runner, read by every layer.

    ``slot_mapping[t]`` is the cache slot (block * block_size + offset) of new token t;
    ``block_tables`` is [batch, max_blocks] (padded with block 0); ``context_lens`` is
    the tokens each sequence has after this step; ``query_lens`` its new tokens;
    ``query_index[t]`` puts token t into the padded [batch * max_query] layout."""

    slot_mapping: torch.Tensor
    block_tables: torch.Tensor
    context_lens: torch.Tensor
    query_lens: torch.Tensor
    query_index: torch.Tensor
    max_query: int
    mask: torch.Tensor | None = None

    @property
    def batch(self) -> int:
        return int(self.block_tables.shape[0])

    def build_mask(self, block_size: int) -> None:
        """[batch, 1, max_query, max_context] bool: a query sees keys at or before its
        position. Padded queries see key 0 only (so no row is empty: no NaN)."""
        dev = self.block_tables.device
        max_ctx = self.block_tables.shape[1] * block_size
        start = (self.context_lens - self.query_lens).unsqueeze(1)
        qpos = start + torch.arange(self.max_query, device=dev).unsqueeze(0)
        real = torch.arange(self.max_query, device=dev).unsqueeze(0) < self.query_lens[:, None]
        qpos = torch.where(real, qpos, torch.zeros_like(qpos))
        kpos = torch.arange(max_ctx, device=dev)
        self.mask = (kpos[None, None, :] <= qpos[:, :, None]).unsqueeze(1)


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
    b, qmax = batch.batch, batch.max_query
    heads, dim = q.shape[1], q.shape[2]
    kv_heads = k.shape[1]
    tables = batch.block_tables
    keys = k_cache[tables].view(b, -1, kv_heads, dim).transpose(1, 2)
    values = v_cache[tables].view(b, -1, kv_heads, dim).transpose(1, 2)
    padded = q.new_zeros(b * qmax, heads, dim)
    padded[batch.query_index] = q
    queries = padded.view(b, qmax, heads, dim).transpose(1, 2)
    out = F.scaled_dot_product_attention(
        queries, keys, values, attn_mask=batch.mask, enable_gqa=heads != kv_heads
    )
    return out.transpose(1, 2).reshape(b * qmax, heads * dim)[batch.query_index]
