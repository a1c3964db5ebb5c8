"""The decode-graph path's static buffers on CPU: each "graph" is recorded as an eager
re-run into the same buffers (a CUDA capture needs a GPU; tests/test_generate_cuda.py
replays real graphs there), so packing, bucket and width padding and the scratch
block are exercised, and tokens must equal the plain eager path's."""

from __future__ import annotations

from collections.abc import Callable

import torch

from generate_fixtures import core_for, drive, greedy
from infleet_worker.generate.attention import AttentionBatch
from infleet_worker.generate.graphs import DecodeGraphs
from infleet_worker.generate.scheduler import ScheduledBatch


class EagerRecorder(DecodeGraphs):
    replayed: list[tuple[int, int]]

    def record(self, b: int, attn: AttentionBatch) -> tuple[Callable[[], None], torch.Tensor]:
        logits = self._forward(b, attn)

        def replay() -> None:
            logits.copy_(self._forward(b, attn))

        return replay, logits

    def replay(self, batch: ScheduledBatch) -> torch.Tensor:
        blocks = max(len(s.block_table) for s in batch.seqs)
        self.replayed.append((len(batch.seqs), blocks))
        return super().replay(batch)


def test_static_buffers_give_the_eager_tokens() -> None:
    prompts = [list(range(1, n + 1)) for n in (3, 17, 40, 9, 270)]
    join = [0, 0, 0, 0, 6]  # the long one joins later: narrow graphs first, then wide
    eager = drive(
        core_for("builtin://llama", blockSize=8, maxModelLen=512), prompts, greedy(12), join
    )
    core = core_for("builtin://llama", blockSize=8, maxModelLen=512)
    graphs = EagerRecorder(core.model, torch.device("cpu"), 8, core.runner.num_blocks)
    graphs.replayed = []
    graphs.capture([1, 2, 4, 8], max_blocks=64)
    assert graphs.widths == [32, 64]  # 256 tokens, then the full 512
    core.runner.graphs = graphs
    assert drive(core, prompts, greedy(12), join) == eager
    widths = {graphs.width(blocks) for _, blocks in graphs.replayed}
    sizes = {graphs.bucket(n) for n, _ in graphs.replayed}
    assert widths == {32, 64} and len(sizes) > 1  # both widths, padded buckets
    scratch = core.model.attention_layers()[0].k_cache[core.runner.num_blocks]
    assert scratch.abs().sum() > 0  # padded rows wrote to the scratch block only
