"""PipelineRunner: a batch -> micro-batches -> stages on several devices -> outputs.

It has the model runner's interface (``prepare_batch``, ``run_model``,
``capture_graphs``), so :class:`PipelineEngine` is the ordinary
:class:`~infleet_worker.engine.torch_engine.TorchEngine` (input checks, error wrapping,
output conversion) over it, and the dynamic batcher drives it like any engine.

The driver runs in the caller's thread: for each clock of :func:`.schedule.clock_cycles`
it hands every task of the clock to its stage's thread and waits for all of them, so a
stage starts a micro-batch only after the previous stage finished it. A failing task
fails the batch with a :class:`StageError` naming the stage, after the rest of that
clock has come back, so nothing of the batch is left in the queues and the next batch
runs normally. ``close`` (any thread) stops the stage threads, with bounded joins, and
a batch in flight fails at once instead of hanging.
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Sequence

import torch
from torch import nn

from infleet_worker.engine.base import EngineError, ModelLoadError
from infleet_worker.engine.pipeline.schedule import (
    clock_cycles,
    micro_batch_buckets,
    offsets,
    split_sizes,
)
from infleet_worker.engine.pipeline.stage import Done, Packet, Stage, StageSpec
from infleet_worker.engine.runner import normalize_outputs
from infleet_worker.engine.torch_engine import TorchEngine
from infleet_worker.models.base import TORCH_DTYPES
from infleet_worker.models.served import ServedView
from infleet_worker.tensors import Tensor

log = logging.getLogger(__name__)

JOIN_SECONDS = 5.0
POLL_SECONDS = 0.05


class StageError(EngineError):
    """One stage failed on a micro-batch: only that batch fails."""


class PipelineRunner:
    def __init__(
        self,
        view: ServedView,
        stage_modules: Sequence[nn.Module],
        devices: Sequence[torch.device],
        dtype: torch.dtype,
        buckets: list[int],
        micro_batches: int,
        cuda_graphs: bool,
        tuple_state: bool,
        trace: bool = False,
        cpu_threads: int | None = None,
    ) -> None:
        if len(stage_modules) != len(devices) or not stage_modules:
            raise ValueError("one device per stage, and at least one stage")
        self.view = view
        self.device = devices[0]
        self.devices = list(devices)
        self.dtype = dtype
        self.buckets = buckets
        self.outputs = view.outputs
        # Rows of a batch only travel apart when the model treats them apart.
        self.micro_batches = micro_batches if view.row_independent else 1
        if micro_batches > 1 and not view.row_independent:
            log.warning("the model is not row-independent: running whole batches, no micro-batches")
        self.tuple_state = tuple_state
        self.use_graphs = cuda_graphs and view.row_independent and self.device.type == "cuda"
        self.graphs = None  # TorchEngine's single-device graph cache: none here
        self.trace: list[tuple[int, int, float, float]] | None = [] if trace else None
        self._done: queue.SimpleQueue[Done] = queue.SimpleQueue()
        self._batches = itertools.count()
        self._closed = threading.Event()
        out_dtypes = [TORCH_DTYPES.get(o.datatype) for o in self.outputs]
        last = len(stage_modules) - 1
        self.stages = [
            Stage(
                j,
                module,
                device,
                StageSpec(
                    j == 0,
                    j == last,
                    dtype,
                    self.outputs,
                    out_dtypes,
                    normalize_outputs,
                    cpu_threads,
                ),
                self._done,
                self.trace,
            )
            for j, (module, device) in enumerate(zip(stage_modules, devices, strict=True))
        ]

    def describe(self) -> str:
        return "; ".join(f"stage {s.index}: {s.describe()}" for s in self.stages)

    # -- host side ---------------------------------------------------------------------
    def prepare_batch(self, host: dict[str, Tensor]) -> tuple[torch.Tensor, ...]:
        return self.view.prepare_inputs(host)

    @torch.inference_mode()
    def run_model(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """One batch of CPU tensors -> CPU outputs, through every stage in micro-batches."""
        if self._closed.is_set():
            raise EngineError("the pipeline is shut down")
        if self.device.type == "cuda":  # pinned: stage 0's copies to the GPU stay async
            inputs = tuple(x.pin_memory() for x in inputs)
        n = int(inputs[0].shape[0])
        spans = offsets(split_sizes(n, self.micro_batches))
        packed = self.tuple_state or len(inputs) > 1
        packets = [Packet(tuple(x[a:b] for x in inputs), packed) for a, b in spans]
        batch = next(self._batches)
        for clock in clock_cycles(len(packets), len(self.stages)):
            for i, j in clock:
                self.stages[j].submit(batch, i, packets[i])
            failures = []
            for done in self._collect(batch, len(clock)):
                if done.error is not None:
                    failures.append(done)
                else:
                    assert done.packet is not None
                    packets[done.micro_batch] = done.packet
            if failures:
                raise self._stage_error(min(failures, key=lambda d: d.stage), len(packets))
        return tuple(
            torch.cat([p.tensors[k] for p in packets])
            if len(packets) > 1
            else packets[0].tensors[k]
            for k in range(len(self.outputs))
        )

    def _collect(self, batch: int, count: int) -> list[Done]:
        """The answers of one clock; fails fast when the pipeline shuts down meanwhile."""
        answers: list[Done] = []
        while len(answers) < count:
            try:
                done = self._done.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self._closed.is_set():
                    raise EngineError("the pipeline shut down mid-batch") from None
                dead = [s.index for s in self.stages if not s.thread.is_alive()]
                if dead:
                    raise EngineError(f"pipeline stage thread(s) {dead} died") from None
                continue
            if done.batch == batch:  # answers of an abandoned batch are dropped
                answers.append(done)
        return answers

    def _stage_error(self, done: Done, micro_batches: int) -> StageError:
        stage = self.stages[done.stage]
        exc = done.error
        return StageError(
            f"pipeline stage {stage.index + 1} of {len(self.stages)} ({stage.describe()}) "
            f"failed on micro-batch {done.micro_batch + 1} of {micro_batches}: "
            f"{type(exc).__name__}: {exc}"
        )

    # -- warm-up -----------------------------------------------------------------------
    @torch.inference_mode()
    def capture_graphs(self) -> int:
        """Run every bucket through the pipeline; on CUDA capture graphs per stage first."""
        if self.use_graphs:
            for size in sorted(micro_batch_buckets(self.buckets, self.micro_batches), reverse=True):
                for example in self.view.example_inputs(size):
                    self._capture_chain(example, size)
        count = 0
        for bucket in sorted(self.buckets, reverse=True):
            examples = self.view.example_inputs(bucket)
            if not self.use_graphs:  # eager: one run per bucket touches every code path
                examples = examples[:1]
            for example in examples:
                self.run_model(example)
                count += 1
        return count

    def _capture_chain(self, example: tuple[torch.Tensor, ...], size: int) -> None:
        packet = Packet(example, self.tuple_state or len(example) > 1)
        for stage in self.stages:
            with torch.cuda.device(stage.device):
                graph = stage.capture_graph(packet, size)
            packet = Packet(tuple(o.clone() for o in graph.static_outputs), graph.packed)

    @property
    def graph_count(self) -> int:
        return sum(len(s.graphs) for s in self.stages)

    # -- shutdown ----------------------------------------------------------------------
    def close(self, timeout: float = JOIN_SECONDS) -> None:
        """Stop the stage threads; a stage stuck in a kernel is left behind, logged."""
        self._closed.set()
        for stage in self.stages:
            stage.close()
        per_stage = timeout / max(1, len(self.stages))
        stuck = [s.index for s in self.stages if not s.join(per_stage)]
        if stuck:
            log.warning("pipeline stage thread(s) %s did not stop within %.1fs", stuck, timeout)
        for stage in self.stages:
            stage.graphs.clear()


class PipelineEngine(TorchEngine):
    """The Engine protocol over a :class:`PipelineRunner` (same checks and errors)."""

    runner: PipelineRunner  # type: ignore[assignment]

    def __init__(
        self,
        name: str,
        version: str,
        runner: PipelineRunner,
        max_batch_size: int,
        warmup: bool,
    ) -> None:
        # PipelineRunner has the interface TorchEngine uses of a ModelRunner.
        super().__init__(name, version, runner, max_batch_size, warmup)  # type: ignore[arg-type]

    def warmup(self) -> None:
        if not self._warmup_enabled:
            return
        try:
            count = self.runner.capture_graphs()
        except Exception as exc:
            raise ModelLoadError(
                f"{self.name}: warm-up failed: {type(exc).__name__}: {exc}"
            ) from exc
        log.info(
            "%s: warmed up %d shapes through %d stages, %d CUDA graphs",
            self.name,
            count,
            len(self.runner.stages),
            self.runner.graph_count,
        )

    def close(self) -> None:
        self.runner.close()
        if any(d.type == "cuda" for d in self.runner.devices):
            torch.cuda.empty_cache()
