"""TorchEngine: the Engine interface over a Runner (validation, errors, warm-up).

One class for every torch model: the runner is a single-device
:class:`~infleet_worker.engine.runner.ModelRunner` or a
:class:`~infleet_worker.engine.pipeline.runner.PipelineRunner`; both implement
:class:`~infleet_worker.engine.runner.Runner`.
"""

from __future__ import annotations

import logging

from infleet_worker.engine.base import EngineError, ModelLoadError, TensorInfo
from infleet_worker.engine.runner import Runner
from infleet_worker.models.base import from_torch
from infleet_worker.tensors import Tensor

log = logging.getLogger(__name__)


class TorchEngine:
    """Serves one torch model; ``run`` is called from one dedicated thread."""

    def __init__(
        self, name: str, version: str, runner: Runner, max_batch_size: int, warmup: bool
    ) -> None:
        self.name = name
        self.version = version
        self.runner = runner
        self.inputs: list[TensorInfo] = runner.view.inputs
        self.outputs: list[TensorInfo] = runner.view.outputs
        self.max_batch_size = max_batch_size
        self.row_independent = runner.view.row_independent
        self.device = runner.device
        self._warmup_enabled = warmup
        self._required = [i for i in self.inputs if not i.optional]

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        self.check_inputs(inputs)
        try:
            prepared = self.runner.prepare_batch(inputs)
            results = self.runner.run_model(prepared)
        except Exception as exc:  # the batch fails, the engine stays up
            raise EngineError(f"{self.name}: {type(exc).__name__}: {exc}") from exc
        return {
            info.name: from_torch(value, info)
            for info, value in zip(self.outputs, results, strict=True)
        }

    def check_inputs(self, inputs: dict[str, Tensor]) -> None:
        """Names, datatypes, per-item shapes and one batch size, with clear messages."""
        if not inputs:
            raise EngineError(f"{self.name}: no inputs")
        known = {i.name: i for i in self.inputs}
        unknown = sorted(set(inputs) - set(known))
        if unknown:
            raise EngineError(f"{self.name}: unknown input(s) {unknown}; expects {sorted(known)}")
        missing = [i.name for i in self._required if i.name not in inputs]
        if missing:
            raise EngineError(f"{self.name}: missing input(s) {missing}")
        batches = {t.batch for t in inputs.values()}
        if len(batches) != 1:
            raise EngineError(f"{self.name}: inputs disagree on the batch size: {sorted(batches)}")
        for name, tensor in inputs.items():
            info = known[name]
            if tensor.datatype != info.datatype:
                raise EngineError(
                    f"{self.name}: input {name!r} is {tensor.datatype}, expected {info.datatype}"
                )
            item = tensor.shape[1:]
            if len(item) != len(info.shape) or any(
                d != -1 and d != s for d, s in zip(info.shape, item, strict=True)
            ):
                raise EngineError(
                    f"{self.name}: input {name!r} has per-item shape {list(item)}, "
                    f"expected {list(info.shape)}"
                )

    def warmup(self) -> None:
        """Run every bucket once (capturing CUDA graphs on GPU); failures are load errors."""
        if not self._warmup_enabled:
            return
        try:
            count = self.runner.capture_graphs()
        except Exception as exc:
            raise ModelLoadError(
                f"{self.name}: warm-up failed: {type(exc).__name__}: {exc}"
            ) from exc
        log.info(
            "%s: warmed up %d shapes, %d CUDA graphs (%s)",
            self.name,
            count,
            self.runner.graph_count,
            self.runner.describe(),
        )

    def failure(self) -> str | None:
        """Why this engine can serve no more batches (the worker should restart), or None."""
        return self.runner.failure()

    def close(self) -> None:
        """Release the runner (bounded: a stuck pipeline stage is left behind, logged)."""
        self.runner.close()
