"""One pipeline stage: its blocks on one device, a CUDA stream there, one worker thread.

The device plumbing, kept apart from the schedule (:mod:`.schedule`). A stage takes
tasks from its queue and answers on the runner's done queue (:mod:`.packet`). A packet
is the state between stages: a flat tuple of tensors, whether the blocks see it as a
tuple (``packed``) or as one tensor, and on CUDA the event recorded on the producing
stage's stream after it wrote them.

On CUDA (torchgpipe's recipe): the consuming stage's stream waits for that event, the
copy to its device is issued on its stream, and ``record_stream`` tells the caching
allocator the source is still read there, so no host sync sits between stages. The last
stage copies its outputs into pinned host memory without waiting; the driver waits for
those copies once per batch. On CPU the stream and events
are None and the same code runs: stage threads overlap because torch ops release the GIL.

CUDA graphs: one graph per stage and micro-batch bucket, captured at warm-up with static
input buffers (rows past ``n`` are padding, so only row-independent models use them).
Each stage captures its own graphs on its own thread and its own stream, the ones that
replay them (see docs/pipeline.md, "CUDA graphs and the hang that was"): graphs captured
on one shared stream by one thread share that (thread, stream)'s cuBLAS workspace, and
two stages replaying them at once race on it.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from infleet_worker.engine.base import TensorInfo
from infleet_worker.engine.buckets import pick_bucket
from infleet_worker.engine.pipeline.packet import Done, Packet, Task, Tensors, rows, to_tuple

log = logging.getLogger(__name__)


@dataclass
class StageGraph:
    graph: Any  # torch.cuda.CUDAGraph
    static_inputs: Tensors
    static_outputs: Tensors
    packed: bool

    def replay(self, tensors: Tensors, n: int) -> Tensors:
        """Run ``n`` real rows on the current stream; outputs are fresh tensors."""
        for static, x in zip(self.static_inputs, tensors, strict=True):
            static[:n].copy_(x, non_blocking=True)
        self.graph.replay()
        # The static outputs are overwritten by the next replay: the next stage gets a copy.
        return tuple(o[:n].clone() for o in self.static_outputs)


@dataclass
class StageSpec:
    """What a stage computes, besides its blocks: casts at the ends of the pipeline."""

    first: bool
    last: bool
    dtype: torch.dtype
    outputs: list[TensorInfo] = field(default_factory=list)
    out_dtypes: list[torch.dtype | None] = field(default_factory=list)
    normalize: Callable[[Any, list[TensorInfo]], Tensors] | None = None
    # CPU "devices": intra-op threads for this stage's thread (the cores shared out).
    cpu_threads: int | None = None


class Stage:
    def __init__(
        self,
        index: int,
        module: nn.Module,
        device: torch.device,
        spec: StageSpec,
        done: queue.SimpleQueue[Done],
        trace: list[tuple[int, int, float, float]] | None = None,
    ) -> None:
        self.index = index
        self.module = module
        self.device = device
        self.spec = spec
        self.cuda = device.type == "cuda"
        self.stream: Any = torch.cuda.Stream(device) if self.cuda else None
        self.graphs: dict[tuple[Any, ...], StageGraph] = {}
        self.graph_buckets: list[int] = []
        self._pool: Any = None
        self._done = done
        self._tasks: queue.SimpleQueue[Task | None] = queue.SimpleQueue()
        self._closed = threading.Event()
        self.trace = trace
        # CUDA: the event after this stage's latest GPU work, and its micro-batch (the
        # watchdog asks which stage's GPU work has not finished)
        self.last_event: Any = None
        self.last_micro_batch = 0
        self.thread = threading.Thread(
            target=self._loop, name=f"pipeline-stage-{index}", daemon=True
        )
        self.thread.start()

    def describe(self) -> str:
        names = [type(m).__name__ for m in self.module.children()] or [type(self.module).__name__]
        shown = names if len(names) <= 4 else [*names[:2], "...", names[-1]]
        return f"{self.device}, {len(names)} block(s): {', '.join(shown)}"

    # -- the computation (what a graph captures) ---------------------------------------
    def forward(self, packed: bool, *tensors: torch.Tensor) -> tuple[bool, Tensors]:
        spec = self.spec
        if spec.first:
            tensors = tuple(x.to(spec.dtype) if x.is_floating_point() else x for x in tensors)
        value = self.module(tensors if packed else tensors[0])
        if not spec.last:
            out, packed = to_tuple(value)
            return packed, out
        assert spec.normalize is not None
        result = spec.normalize(value, spec.outputs)
        return True, tuple(
            r if dt is None or r.dtype == dt else r.to(dt)
            for r, dt in zip(result, spec.out_dtypes, strict=True)
        )

    def compute(self, packet: Packet) -> Packet:
        """One micro-batch, on this stage's device and stream (called on its thread)."""
        if not self.cuda:
            packed, out = self.forward(packet.packed, *packet.tensors)
            return Packet(out, packed)
        with torch.cuda.stream(self.stream):
            if packet.event is not None:
                self.stream.wait_event(packet.event)
            graph = self.find_graph(packet)
            if graph is not None:
                for x in packet.tensors:
                    self._keep_alive(x)
                packed, out = graph.packed, graph.replay(packet.tensors, rows(packet.tensors))
            else:
                moved = tuple(self._move(x) for x in packet.tensors)
                packed, out = self.forward(packet.packed, *moved)
            return self._hand_on(out, packed)

    def _hand_on(self, out: Tensors, packed: bool) -> Packet:
        """Outputs for the next stage, or (last stage) copied into pinned host memory;
        either way with an event on our stream. Nothing here waits for the GPU: the
        driver waits for the last stage's events once, at the end of the batch."""
        if self.spec.last:
            host = tuple(torch.empty(o.shape, dtype=o.dtype, pin_memory=True) for o in out)
            for h, o in zip(host, out, strict=True):
                h.copy_(o, non_blocking=True)
            out = host
        event = torch.cuda.Event()
        event.record(self.stream)
        return Packet(out, packed, event)

    def _move(self, x: torch.Tensor) -> torch.Tensor:
        self._keep_alive(x)
        return x.to(self.device, non_blocking=True)

    def _keep_alive(self, x: torch.Tensor) -> None:
        """Tell the caching allocator a tensor from another stream is read on ours."""
        if x.is_cuda:
            x.record_stream(
                self.stream if x.device == self.device else torch.cuda.current_stream(x.device)
            )

    # -- CUDA graphs -------------------------------------------------------------------
    def find_graph(self, packet: Packet) -> StageGraph | None:
        if not self.graphs:
            return None
        bucket = pick_bucket(rows(packet.tensors), self.graph_buckets)
        if bucket is None:
            return None
        return self.graphs.get(graph_key(packet, bucket))

    def capture_graph(self, packet: Packet, bucket: int) -> Packet:
        """Capture this stage for ``packet``'s shapes padded to ``bucket`` rows (warm-up).

        Runs on the stage's own thread (a :class:`Task` with ``capture``) while no other
        stage works, captures on the stage's own stream (the one that replays it) in
        ``thread_local`` mode, and hands on a copy of the graph's outputs: the example
        for the next stage's capture.
        """
        key = graph_key(packet, bucket)
        captured = self.graphs.get(key)
        if captured is None:
            captured = self._capture(packet, key)
            self.graphs[key] = captured
            if bucket not in self.graph_buckets:
                self.graph_buckets = sorted({*self.graph_buckets, bucket})
            log.info("stage %d: captured CUDA graph for %s", self.index, key)
        with torch.cuda.stream(self.stream):
            return self._hand_on(tuple(o.clone() for o in captured.static_outputs), captured.packed)

    def _capture(self, packet: Packet, key: tuple[Any, ...]) -> StageGraph:
        if self._pool is None:
            self._pool = torch.cuda.graph_pool_handle()
        with torch.cuda.stream(self.stream):
            if packet.event is not None:
                self.stream.wait_event(packet.event)
            static = tuple(self._move(x).clone() for x in packet.tensors)
            for _ in range(2):  # lazy inits (cuBLAS handle, workspace) off the capture
                self.forward(packet.packed, *static)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(
            graph, pool=self._pool, stream=self.stream, capture_error_mode="thread_local"
        ):
            packed, outputs = self.forward(packet.packed, *static)
        self.stream.synchronize()
        return StageGraph(graph, static, outputs, packed)

    # -- the worker thread -------------------------------------------------------------
    def submit(self, task: Task) -> None:
        self._tasks.put(task)

    def close(self) -> None:
        self._closed.set()
        self._tasks.put(None)

    def join(self, timeout: float) -> bool:
        self.thread.join(max(0.0, timeout))
        return not self.thread.is_alive()

    def _loop(self) -> None:
        if self.cuda:
            torch.cuda.set_device(self.device)
        elif self.spec.cpu_threads:
            torch.set_num_threads(self.spec.cpu_threads)
        with torch.inference_mode():
            while True:
                task = self._tasks.get()
                if task is None or self._closed.is_set():
                    return
                self._done.put(self._run(task))

    def _run(self, task: Task) -> Done:
        start = time.perf_counter()
        try:
            if task.capture is not None:
                out = self.capture_graph(task.packet, task.capture)
            else:
                out = self.compute(task.packet)
        except Exception as exc:  # reported to the driver; the thread keeps serving
            return Done(task.batch, task.micro_batch, self.index, error=exc)
        finally:
            if self.trace is not None and task.capture is None:
                self.trace.append((task.micro_batch, self.index, start, time.perf_counter()))
        self.last_event, self.last_micro_batch = out.event, task.micro_batch
        return Done(task.batch, task.micro_batch, self.index, packet=out)

    def gpu_busy(self) -> bool:
        """CUDA: whether this stage's latest GPU work is still unfinished."""
        return self.last_event is not None and not self.last_event.query()


def graph_key(packet: Packet, bucket: int) -> tuple[Any, ...]:
    shapes = tuple((bucket, *x.shape[1:]) for x in packet.tensors)
    return (packet.packed, shapes, tuple(x.dtype for x in packet.tensors))
