"""CUDA graphs: one captured graph per padded input shape, with static buffers.

Capture happens at start-up (warm-up), largest bucket first so every graph shares one
memory pool, on the runner's own stream (the one that replays them: graphs captured on
a stream shared with other engines would share its cuBLAS workspace), in
``thread_local`` capture mode so another thread's CUDA calls cannot break a capture.
A graph owns static device inputs/outputs plus pinned host staging buffers of the same
shapes, so a replay allocates nothing: host rows are copied into the pinned
input buffer, sent with non_blocking H2D copies, the graph replays, and outputs come
back through the pinned output buffer with non_blocking D2H copies and one sync.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

log = logging.getLogger(__name__)

Forward = Callable[..., tuple[torch.Tensor, ...]]
ShapeKey = tuple[tuple[int, ...], ...]


def shape_key(tensors: tuple[torch.Tensor, ...]) -> ShapeKey:
    return tuple(tuple(t.shape) for t in tensors)


def _sync_current_stream() -> None:
    torch.cuda.current_stream().synchronize()


@dataclass
class CapturedGraph:
    graph: Any  # torch.cuda.CUDAGraph (anything with replay() in CPU tests)
    static_inputs: tuple[torch.Tensor, ...]
    static_outputs: tuple[torch.Tensor, ...]
    host_inputs: tuple[torch.Tensor, ...]
    host_outputs: tuple[torch.Tensor, ...]
    synchronize: Callable[[], None] = field(default=_sync_current_stream)

    def replay(self, inputs: tuple[torch.Tensor, ...], n: int) -> tuple[torch.Tensor, ...]:
        """Run ``n`` real rows (the rest of the bucket is padding) on the current stream."""
        for host, static, x in zip(self.host_inputs, self.static_inputs, inputs, strict=True):
            host[:n].copy_(x)
            static[:n].copy_(host[:n], non_blocking=True)
        self.graph.replay()
        for host, static in zip(self.host_outputs, self.static_outputs, strict=True):
            host[:n].copy_(static[:n], non_blocking=True)
        self.synchronize()
        # The pinned buffers are reused by the next batch: hand the caller its own copy.
        return tuple(h[:n].clone() for h in self.host_outputs)


class GraphCache:
    """Captured graphs keyed by their padded input shapes."""

    def __init__(self, forward: Forward, device: torch.device, stream: Any) -> None:
        self.forward = forward
        self.device = device
        self.stream = stream  # torch.cuda.Stream: capture and replay on it
        self.graphs: dict[ShapeKey, CapturedGraph] = {}
        self.pool = torch.cuda.graph_pool_handle()

    def get(self, key: ShapeKey) -> CapturedGraph | None:
        return self.graphs.get(key)

    def capture_graph(self, example: tuple[torch.Tensor, ...]) -> CapturedGraph:
        """Capture ``forward`` for the shapes of ``example`` (CPU tensors)."""
        key = shape_key(example)
        if key in self.graphs:
            return self.graphs[key]
        with torch.cuda.stream(self.stream):  # warm-up iterations off the capture (lazy inits)
            static_inputs = tuple(x.to(self.device) for x in example)
            for _ in range(2):
                self.forward(*static_inputs)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(
            graph, pool=self.pool, stream=self.stream, capture_error_mode="thread_local"
        ):
            static_outputs = self.forward(*static_inputs)
        self.stream.synchronize()
        captured = CapturedGraph(
            graph=graph,
            static_inputs=static_inputs,
            static_outputs=static_outputs,
            host_inputs=tuple(torch.empty_like(x, device="cpu").pin_memory() for x in example),
            host_outputs=tuple(
                torch.empty(o.shape, dtype=o.dtype).pin_memory() for o in static_outputs
            ),
        )
        self.graphs[key] = captured
        log.info("captured CUDA graph for input shapes %s", key)
        return captured
