"""The padded replay path of CapturedGraph / ModelRunner, exercised on CPU.

A stand-in graph (``replay`` recomputes into the static outputs) replaces the CUDA
graph, so bucket lookup, padding, static/pinned buffer copies, slicing and output
ownership are tested without a GPU; tests/test_engine_cuda.py runs the real thing.
"""

from __future__ import annotations

from typing import Any

import torch

from infleet_worker.engine.graphs import CapturedGraph, shape_key
from infleet_worker.engine.runner import ModelRunner
from infleet_worker.models.mlp import MLP
from infleet_worker.models.served import ServedView


class CpuGraph:
    def __init__(self, forward: Any, inputs: tuple[torch.Tensor, ...]) -> None:
        self.forward, self.inputs = forward, inputs
        self.outputs = forward(*inputs)
        self.replays = 0

    def replay(self) -> None:
        self.replays += 1
        for static, fresh in zip(self.outputs, self.forward(*self.inputs), strict=True):
            static.copy_(fresh)


class CpuGraphCache:
    """GraphCache's interface, capturing CpuGraphs."""

    def __init__(self, forward: Any) -> None:
        self.forward = forward
        self.graphs: dict[Any, CapturedGraph] = {}

    def get(self, key: Any) -> CapturedGraph | None:
        return self.graphs.get(key)

    def capture_graph(self, example: tuple[torch.Tensor, ...]) -> CapturedGraph:
        static = tuple(x.clone() for x in example)
        graph = CpuGraph(self.forward, static)
        captured = CapturedGraph(
            graph=graph,
            static_inputs=static,
            static_outputs=graph.outputs,
            host_inputs=tuple(torch.empty_like(x) for x in example),
            host_outputs=tuple(torch.empty_like(o) for o in graph.outputs),
            synchronize=lambda: None,
        )
        self.graphs[shape_key(example)] = captured
        return captured


def runner() -> ModelRunner:
    model = MLP(width=16, depth=2, seed=3).eval()
    run = ModelRunner(ServedView(model), torch.device("cpu"), torch.float32, [1, 2, 4], False)
    run.graphs = CpuGraphCache(run.forward)  # type: ignore[assignment]
    return run


def test_warmup_captures_every_bucket() -> None:
    run = runner()
    assert run.capture_graphs() == 3
    assert run.graphs is not None
    assert sorted(run.graphs.graphs) == [((1, 16),), ((2, 16),), ((4, 16),)]


def test_padded_batches_equal_eager_and_are_sliced() -> None:
    run = runner()
    run.capture_graphs()
    x = torch.randn(4, 16)
    for n in (1, 2, 3, 4):
        (out,) = run.run_model((x[:n],))
        assert out.shape == (n, 16)
        torch.testing.assert_close(out, run.forward(x[:n])[0])
    assert run.graphs is not None
    assert run.graphs.graphs[((4, 16),)].graph.replays >= 2  # 3 and 4 rows use bucket 4


def test_outputs_are_the_callers_own() -> None:
    run = runner()
    run.capture_graphs()
    (first,) = run.run_model((torch.ones(3, 16),))
    kept = first.clone()
    run.run_model((torch.full((3, 16), -5.0),))
    torch.testing.assert_close(first, kept)  # not overwritten by the next batch


def test_beyond_the_buckets_runs_eager() -> None:
    run = runner()
    run.capture_graphs()
    x = torch.randn(7, 16)
    (out,) = run.run_model((x,))
    torch.testing.assert_close(out, run.forward(x)[0])
