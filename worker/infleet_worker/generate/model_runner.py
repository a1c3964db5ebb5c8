"""Run one scheduled step: pack its tokens, fill the attention metadata, run the model
(or replay a captured decode graph), return the logits of the sequences that sample."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from infleet_worker.generate.attention import (
    AttentionBatch,
    DecodeGroup,
    PrefillChunk,
    prefill_mask,
)
from infleet_worker.generate.config import LlamaConfig
from infleet_worker.generate.graphs import DecodeGraphs
from infleet_worker.generate.llama import LlamaForCausalLM
from infleet_worker.generate.scheduler import ScheduledBatch
from infleet_worker.generate.sequence import Sequence


def _long(values: list[int] | list[list[int]], device: torch.device) -> torch.Tensor:
    return torch.tensor(values, dtype=torch.long, device=device)


def group_by_length(seqs: list[Sequence], groups: int = 4) -> list[tuple[int, list[Sequence]]]:
    """Split decodes sorted by block count into at most ``groups`` runs whose longest
    member has at most twice the blocks of the shortest: each run is gathered padded to
    its own longest member. Returns (first packed index, members) per run."""
    runs: list[tuple[int, list[Sequence]]] = []
    for i, seq in enumerate(seqs):
        if runs and (
            len(seq.block_table) <= 2 * len(runs[-1][1][0].block_table) or len(runs) == groups
        ):
            runs[-1][1].append(seq)
        else:
            runs.append((i, [seq]))
    return runs


def kv_bytes_per_block(cfg: LlamaConfig, block_size: int, dtype: torch.dtype) -> int:
    """Keys and values of one block across every layer."""
    elem = torch.empty(0, dtype=dtype).element_size()
    return 2 * cfg.num_layers * block_size * cfg.num_kv_heads * cfg.head_dim * elem


@dataclass
class StepInputs:
    input_ids: torch.Tensor
    positions: torch.Tensor
    attention: AttentionBatch
    sample_rows: torch.Tensor
    sample_seqs: list[Sequence]


class ModelRunner:
    def __init__(
        self,
        model: LlamaForCausalLM,
        num_blocks: int,
        block_size: int,
        device: torch.device,
        dtype: torch.dtype,
    ) -> None:
        cfg = model.config
        self.model = model
        self.block_size = block_size
        self.device = device
        self.num_blocks = num_blocks
        # One extra block past the managed ones: the scratch slot padded graph rows write to.
        shape = (num_blocks + 1, block_size, cfg.num_kv_heads, cfg.head_dim)
        for attn in model.attention_layers():
            attn.k_cache = torch.zeros(shape, dtype=dtype, device=device)
            attn.v_cache = torch.zeros(shape, dtype=dtype, device=device)
        self.graphs: DecodeGraphs | None = None

    def capture_graphs(self, buckets: list[int], max_context: int) -> None:
        """CUDA graphs of decode steps, one per batch bucket (GPU only)."""
        if self.device.type != "cuda" or not buckets:
            return
        blocks = -(-max_context // self.block_size)
        self.graphs = DecodeGraphs(self.model, self.device, self.block_size, self.num_blocks)
        self.graphs.capture(buckets, blocks)

    def prepare_inputs(self, batch: ScheduledBatch) -> StepInputs:
        """Pack the step: decode tokens first (one per sequence), then prompt chunks."""
        bs, dev = self.block_size, self.device
        pairs = list(zip(batch.seqs, batch.num_new, strict=True))
        decodes = sorted(((s, n) for s, n in pairs if n == 1), key=lambda p: len(p[0].block_table))
        chunks = [(s, n) for s, n in pairs if n > 1]
        ids: list[int] = []
        pos: list[int] = []
        slots: list[int] = []
        rows: list[int] = []
        seqs: list[Sequence] = []
        for seq, n in decodes + chunks:
            start, table = seq.num_computed_tokens, seq.block_table
            ids.extend(seq.token_ids[start : start + n])
            pos.extend(range(start, start + n))
            slots.extend(table[p // bs] * bs + p % bs for p in range(start, start + n))
            if start + n == seq.num_tokens:
                rows.append(len(ids) - 1)
                seqs.append(seq)
        groups = []
        for start, members in group_by_length([s for s, _ in decodes]):
            width = len(members[-1].block_table)
            tables = [s.block_table + [0] * (width - len(s.block_table)) for s in members]
            lens = [s.num_computed_tokens + 1 for s in members]
            groups.append(DecodeGroup(start, _long(tables, dev), _long(lens, dev)))
        prefills = []
        offset = len(decodes)
        for seq, n in chunks:
            start = seq.num_computed_tokens
            used = -(-(start + n) // bs)
            mask = prefill_mask(start, n, used * bs, dev)
            prefills.append(PrefillChunk(offset, n, _long(seq.block_table[:used], dev), mask))
            offset += n
        attention = AttentionBatch(_long(slots, dev), groups, prefills)
        return StepInputs(_long(ids, dev), _long(pos, dev), attention, _long(rows, dev), seqs)

    @torch.inference_mode()
    def run_model(self, batch: ScheduledBatch) -> tuple[torch.Tensor | None, list[Sequence]]:
        """Logits [sampling sequences, vocab] of the step (None when none samples)."""
        if self.graphs is not None and self.graphs.fits(batch):
            return self.graphs.replay(batch), list(batch.seqs)
        inputs = self.prepare_inputs(batch)
        inputs.attention.build_mask(self.block_size)
        hidden = self.model(inputs.input_ids, inputs.positions, inputs.attention)
        if not inputs.sample_seqs:
            return None, []
        return self.model.compute_logits(hidden[inputs.sample_rows]), inputs.sample_seqs
