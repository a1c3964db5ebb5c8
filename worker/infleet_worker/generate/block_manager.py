"""The paged KV cache's bookkeeping: fixed-size blocks, per-sequence block tables, a
free pool, and prefix caching.

A full block is hashed by its tokens chained with the hash of the block before it
(so equal tokens at another position never match) once its keys/values are
computed. A new sequence takes the cached blocks of its longest cached prefix
(read-only, reference counted) and computes only the rest. Freed blocks keep their
hash and go to the back of the free pool; a block taken from the front (the least
recently freed) loses it: LRU eviction.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from infleet_worker.generate.sequence import Sequence


@dataclass
class Block:
    block_id: int
    ref_count: int = 0
    hash: int | None = None
    token_ids: tuple[int, ...] = ()


def chain_hash(prev: int | None, tokens: tuple[int, ...]) -> int:
    return hash((prev, tokens))


class BlockManager:
    def __init__(self, num_blocks: int, block_size: int, prefix_caching: bool = True) -> None:
        if num_blocks < 1:
            raise ValueError("the KV cache needs at least one block")
        self.block_size = block_size
        self.prefix_caching = prefix_caching
        self.blocks = [Block(i) for i in range(num_blocks)]
        self.free: OrderedDict[int, None] = OrderedDict((i, None) for i in range(num_blocks))
        self.cached: dict[int, int] = {}  # hash -> block id
        self.query_tokens = 0  # prompt tokens looked up in the prefix cache
        self.hit_tokens = 0  # of which served from it

    @property
    def num_blocks(self) -> int:
        return len(self.blocks)

    @property
    def num_free(self) -> int:
        return len(self.free)

    @property
    def usage(self) -> float:
        return 1.0 - self.num_free / self.num_blocks

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)

    def take_cached_prefix(self, seq: Sequence) -> int:
        """On admission: share the cached blocks of seq's longest cached prefix (always
        leaving one token to compute, whose logits the step needs). Returns the tokens."""
        assert not seq.block_table, "sequence already holds blocks"
        if not self.prefix_caching:
            return 0
        bs, prev = self.block_size, None
        for i in range((seq.num_tokens - 1) // bs):
            tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            h = chain_hash(prev, tokens)
            bid = self.cached.get(h)
            if bid is None or self.blocks[bid].token_ids != tokens:
                break
            block = self.blocks[bid]
            if block.ref_count == 0:
                del self.free[bid]
            block.ref_count += 1
            seq.block_table.append(bid)
            seq.block_hashes.append(h)
            prev = h
        hit = len(seq.block_table) * bs
        seq.num_computed_tokens = hit
        return hit

    def record_lookup(self, prompt_tokens: int, hit_tokens: int) -> None:
        self.query_tokens += prompt_tokens
        self.hit_tokens += hit_tokens

    def can_append(self, seq: Sequence, new_tokens: int) -> bool:
        need = self.blocks_for(seq.num_computed_tokens + new_tokens) - len(seq.block_table)
        return need <= self.num_free

    def append_slots(self, seq: Sequence, new_tokens: int) -> None:
        """Give seq blocks for its next ``new_tokens`` (call can_append first)."""
        need = self.blocks_for(seq.num_computed_tokens + new_tokens) - len(seq.block_table)
        for _ in range(need):
            seq.block_table.append(self._take_free())

    def _take_free(self) -> int:
        bid, _ = self.free.popitem(last=False)
        block = self.blocks[bid]
        if block.hash is not None and self.cached.get(block.hash) == bid:
            del self.cached[block.hash]  # evicted: least recently freed
        block.hash, block.token_ids, block.ref_count = None, (), 1
        return bid

    def cache_full_blocks(self, seq: Sequence) -> None:
        """After a step: publish the blocks the step filled, keyed by their chained hash."""
        if not self.prefix_caching:
            return
        bs = self.block_size
        full = min(seq.num_computed_tokens // bs, len(seq.block_table))
        for i in range(len(seq.block_hashes), full):
            tokens = tuple(seq.token_ids[i * bs : (i + 1) * bs])
            prev = seq.block_hashes[i - 1] if i else None
            h = chain_hash(prev, tokens)
            seq.block_hashes.append(h)
            block = self.blocks[seq.block_table[i]]
            if block.hash is None and h not in self.cached:
                block.hash, block.token_ids = h, tokens
                self.cached[h] = block.block_id

    def free_blocks(self, seq: Sequence) -> None:
        """Release seq's blocks (finish, abort, preemption); tail blocks are evicted first."""
        for bid in reversed(seq.block_table):
            block = self.blocks[bid]
            block.ref_count -= 1
            if block.ref_count == 0:
                self.free[bid] = None
                if block.hash is None:  # holds nothing reusable: hand it out first
                    self.free.move_to_end(bid, last=False)
        seq.block_table.clear()
        seq.block_hashes.clear()
