"""Generation on a GPU: decode steps replayed from CUDA graphs give the tokens eager
steps give. Skipped without CUDA: ``pytest -q tests/test_generate_cuda.py`` on a GPU."""

from __future__ import annotations

import pytest
import torch

from infleet_worker.config import WorkerConfig
from infleet_worker.generate.loader import build_core
from infleet_worker.generate.sequence import SamplingParams

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def tokens(cuda_graphs: bool) -> tuple[list[list[int]], int]:
    cfg = WorkerConfig.model_validate(
        {
            "model": {
                "name": "m",
                "source": "builtin://llama",
                "parameters": {"maxModelLen": "512"},
            },
            "engine": {"device": "cuda", "cudaGraphs": cuda_graphs, "warmup": False},
            "batching": {"maxBatchSize": 8},
        }
    )
    core = build_core(cfg)
    replays = 0
    if core.runner.graphs is not None:
        graphs = core.runner.graphs
        original = graphs.replay

        def counted(batch):  # type: ignore[no-untyped-def]
            nonlocal replays
            replays += 1
            return original(batch)

        graphs.replay = counted  # type: ignore[method-assign]
    outs: list[list[int]] = [[] for _ in range(5)]
    for i, n in enumerate([3, 17, 40, 9, 70]):
        seq = core.make_sequence(
            list(range(1, n + 1)), SamplingParams(max_tokens=20, temperature=0, ignore_eos=True)
        )
        core.add_sequence(seq, lambda o, i=i: outs[i].append(o.token_id))
    while core.has_work:
        core.step()
    return outs, replays


def test_graph_replays_match_eager() -> None:
    graphed, replays = tokens(True)
    eager, none = tokens(False)
    assert replays > 10 and none == 0
    assert graphed == eager
