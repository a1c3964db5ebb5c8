"""PipelineRunner: a batch -> micro-batches -> stages on several devices -> outputs.

It implements the :class:`~infleet_worker.engine.runner.Runner` protocol, like the
single-device :class:`~infleet_worker.engine.runner.ModelRunner`, so the one
:class:`~infleet_worker.engine.torch_engine.TorchEngine` (input checks, error wrapping,
output conversion) serves either, and the dynamic batcher drives it like any engine.

The driver runs in the caller's thread: for each clock of :func:`.schedule.clock_cycles`
it hands every task of the clock to its stage's thread and waits for all of them, so a
stage starts a micro-batch only after the previous stage finished it. A failing task
fails the batch with a :class:`StageError` naming the stage, after the rest of that
clock has come back, so nothing of the batch is left in the queues and the next batch
runs normally.

Nothing waits without a bound. A watchdog: a clock whose tasks are not all back within
``stage_timeout`` seconds fails its batch with a :class:`StageError` naming the stage
that made no progress, and the runner is then *stuck*: every later batch fails at once
with the same words (:meth:`PipelineRunner.failure`), since the stuck thread may never
come back. ``close`` (any thread) stops the stage threads with joins bounded in total,
and a batch in flight fails at once instead of hanging.
"""

from __future__ import annotations

import itertools
import logging
import os
import queue
import threading
import time
from collections.abc import Sequence

import torch
from torch import nn

from infleet_worker.engine.base import DeviceLostError, EngineError
from infleet_worker.engine.pipeline.packet import Done, Packet, Task
from infleet_worker.engine.pipeline.schedule import (
    clock_cycles,
    micro_batch_buckets,
    offsets,
    split_sizes,
)
from infleet_worker.engine.pipeline.stage import Stage, StageSpec
from infleet_worker.engine.runner import normalize_outputs
from infleet_worker.models.base import TORCH_DTYPES
from infleet_worker.models.served import ServedView
from infleet_worker.tensors import Tensor

log = logging.getLogger(__name__)

JOIN_SECONDS = 5.0
POLL_SECONDS = 0.05
WAIT_SECONDS = 5e-5  # CUDA event polling at the end of a batch
# A stage that answers no task of its clock for this long is stuck (env overrides it).
STAGE_TIMEOUT_ENV = "INFLEET_PIPELINE_STAGE_TIMEOUT_SECONDS"
STAGE_TIMEOUT_SECONDS = 60.0


def default_stage_timeout() -> float:
    text = os.environ.get(STAGE_TIMEOUT_ENV, "")
    try:
        value = float(text) if text else STAGE_TIMEOUT_SECONDS
    except ValueError:
        raise ValueError(f"{STAGE_TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if value <= 0:
        raise ValueError(f"{STAGE_TIMEOUT_ENV} must be > 0 seconds, got {value}")
    return value


class StageError(EngineError):
    """One stage failed (or made no progress) on a micro-batch: that batch fails."""


class StageStalled(StageError, DeviceLostError):
    """A stage made no progress within the bound: the device is presumed hung, so the
    worker answers everything as retryable and restarts (batch_run)."""


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
        stage_timeout: float | None = None,
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
        self.stage_timeout = stage_timeout if stage_timeout is not None else default_stage_timeout()
        self.trace: list[tuple[int, int, float, float]] | None = [] if trace else None
        self._done: queue.SimpleQueue[Done] = queue.SimpleQueue()
        self._batches = itertools.count()
        self._closed = threading.Event()
        self._stuck: str | None = None
        self._stuck_stage: int | None = None
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

    def failure(self) -> str | None:
        """Why this runner can serve no more batches (a stuck stage), or None."""
        return self._stuck

    @property
    def graph_count(self) -> int:
        return sum(len(s.graphs) for s in self.stages)

    # -- host side ---------------------------------------------------------------------
    def prepare_batch(self, host: dict[str, Tensor]) -> tuple[torch.Tensor, ...]:
        return self.view.prepare_inputs(host)

    @torch.inference_mode()
    def run_model(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """One batch of CPU tensors -> CPU outputs, through every stage in micro-batches."""
        self._check_serving()
        if self.device.type == "cuda":  # pinned: stage 0's copies to the GPU stay async
            inputs = tuple(x.pin_memory() for x in inputs)
        n = int(inputs[0].shape[0])
        spans = offsets(split_sizes(n, self.micro_batches))
        packed = self.tuple_state or len(inputs) > 1
        packets = [Packet(tuple(x[a:b] for x in inputs), packed) for a, b in spans]
        batch = next(self._batches)
        for clock in clock_cycles(len(packets), len(self.stages)):
            tasks = [(j, Task(batch, i, packets[i])) for i, j in clock]
            for done in self._run_clock(batch, tasks, len(packets)):
                assert done.packet is not None
                packets[done.micro_batch] = done.packet
        self._wait_for_outputs(packets)
        return tuple(
            torch.cat([p.tensors[k] for p in packets])
            if len(packets) > 1
            else packets[0].tensors[k]
            for k in range(len(self.outputs))
        )

    def _check_serving(self) -> None:
        if self._stuck is not None:
            raise StageStalled(self._stuck)
        if self._closed.is_set():
            raise EngineError("the pipeline is shut down")

    def _run_clock(
        self, batch: int, tasks: list[tuple[int, Task]], micro_batches: int
    ) -> list[Done]:
        """Hand each task to its stage, wait for all answers; the first failure raises."""
        for j, task in tasks:
            self.stages[j].submit(task)
        answers = self._collect(batch, {(t.micro_batch, j) for j, t in tasks}, micro_batches)
        failures = [d for d in answers if d.error is not None]
        if failures:
            raise self._stage_error(min(failures, key=lambda d: d.stage), micro_batches)
        return answers

    def _collect(self, batch: int, pending: set[tuple[int, int]], micro_batches: int) -> list[Done]:
        """The answers of one clock; fails when the pipeline shuts down or a stage stalls."""
        answers: list[Done] = []
        deadline = time.monotonic() + self.stage_timeout
        while pending:
            try:
                done = self._done.get(timeout=POLL_SECONDS)
            except queue.Empty:
                if self._closed.is_set():
                    raise EngineError("the pipeline shut down mid-batch") from None
                dead = [s.index + 1 for s in self.stages if not s.thread.is_alive()]
                if dead:
                    raise EngineError(f"pipeline stage thread(s) {dead} died") from None
                if time.monotonic() > deadline:
                    raise self._stalled(min(pending, key=lambda t: t[1]), micro_batches) from None
                continue
            if done.batch == batch:  # answers of an abandoned batch are dropped
                pending.discard((done.micro_batch, done.stage))
                answers.append(done)
        return answers

    def _wait_for_outputs(self, packets: list[Packet]) -> None:
        """CUDA: wait (bounded, polling) until the last stage's copies to the host are done."""
        deadline = time.monotonic() + self.stage_timeout
        for i, packet in enumerate(packets):
            while packet.event is not None and not packet.event.query():
                if self._closed.is_set():
                    raise EngineError("the pipeline shut down mid-batch")
                if time.monotonic() > deadline:
                    raise self._stalled((i, len(self.stages) - 1), len(packets))
                time.sleep(WAIT_SECONDS)

    def _stalled(self, task: tuple[int, int], micro_batches: int) -> StageStalled:
        """The watchdog fired waiting for ``task``; blame the first stage whose GPU work
        has not finished (later stages wait on it), else the task's own stage."""
        micro_batch, j = task
        busy = [s for s in self.stages if s.gpu_busy()]
        if busy:
            j, micro_batch = busy[0].index, busy[0].last_micro_batch
        stage = self.stages[j]
        self._stuck_stage = j
        self._stuck = (
            f"pipeline stage {j + 1} of {len(self.stages)} ({stage.describe()}) made no "
            f"progress for {self.stage_timeout:g}s on micro-batch {micro_batch + 1} of "
            f"{micro_batches}; the pipeline is stuck and the worker must restart"
        )
        log.error("%s", self._stuck)
        return StageStalled(self._stuck)

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
        """Each stage captures on its own thread, one stage at a time (nothing else runs)."""
        self._check_serving()
        packet = Packet(example, self.tuple_state or len(example) > 1)
        batch = next(self._batches)
        for j in range(len(self.stages)):
            (done,) = self._run_clock(batch, [(j, Task(batch, 0, packet, capture=size))], 1)
            assert done.packet is not None
            packet = done.packet

    # -- shutdown ----------------------------------------------------------------------
    def close(self, timeout: float = JOIN_SECONDS) -> None:
        """Stop the stage threads within ``timeout`` in all; a stuck stage is left behind.

        Device memory is handed back only when every stage stopped and the watchdog never
        fired: with a stage stuck in a kernel, ``torch.cuda.empty_cache`` (which syncs,
        holding the GIL) could hang the whole process.
        """
        self._closed.set()
        for stage in self.stages:
            stage.close()
        deadline = time.monotonic() + timeout
        stuck = [  # the stage the watchdog found stuck gets no wait of its own
            s.index + 1
            for s in self.stages
            if not s.join(0.0 if s.index == self._stuck_stage else deadline - time.monotonic())
        ]
        if stuck:
            log.warning("pipeline stage thread(s) %s did not stop within %.1fs", stuck, timeout)
        if stuck or self._stuck is not None:  # the device may be wedged: touch nothing
            return
        for stage in self.stages:
            stage.graphs.clear()
        if any(d.type == "cuda" for d in self.devices):
            torch.cuda.empty_cache()
