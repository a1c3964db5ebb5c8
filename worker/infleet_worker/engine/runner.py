"""Model runners: host batch -> device(s) -> model (graph or eager) -> host outputs.

:class:`Runner` is what :class:`~infleet_worker.engine.torch_engine.TorchEngine` needs of
one; :class:`ModelRunner` (here, one device) and
:class:`~infleet_worker.engine.pipeline.runner.PipelineRunner` (stages over several
devices) implement it.

ModelRunner knows nothing of sources or precision choice: it gets a ready module on its device, the
signature, the compute dtype and the buckets. ``forward`` is what CUDA graphs capture:
input casts to the compute dtype, the model, output normalization and casts back to the
signature's dtypes, so a replay does all of it on the GPU.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Any, Protocol

import torch
from torch import nn

from infleet_worker.engine.base import TensorInfo
from infleet_worker.engine.buckets import pick_bucket
from infleet_worker.engine.graphs import GraphCache, shape_key
from infleet_worker.models.base import TORCH_DTYPES
from infleet_worker.models.served import ServedView
from infleet_worker.tensors import Tensor

log = logging.getLogger(__name__)


class Runner(Protocol):
    """Runs batches of a served model on its device(s); called from one thread."""

    view: ServedView
    device: torch.device
    outputs: list[TensorInfo]

    def prepare_batch(self, host: dict[str, Tensor]) -> tuple[torch.Tensor, ...]:
        """Host tensors -> CPU torch tensors in signature order."""
        ...

    def run_model(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """One batch of CPU tensors -> CPU outputs with the same batch size."""
        ...

    def capture_graphs(self) -> int:
        """Warm every bucket (capturing CUDA graphs where used); returns shapes run."""
        ...

    @property
    def graph_count(self) -> int: ...

    def describe(self) -> str: ...

    def failure(self) -> str | None:
        """Why no batch can run any more (e.g. a stuck pipeline stage), else None."""
        ...

    def close(self) -> None:
        """Release threads, graphs and device memory; returns within a bound."""
        ...


class ModelRunner:
    def __init__(
        self,
        view: ServedView,
        device: torch.device,
        dtype: torch.dtype,
        buckets: list[int],
        cuda_graphs: bool,
    ) -> None:
        self.view = view
        self.module: nn.Module = view.module
        self.device = device
        self.dtype = dtype
        self.buckets = buckets
        self.outputs: list[TensorInfo] = view.outputs
        self._out_dtypes = [TORCH_DTYPES.get(o.datatype) for o in self.outputs]
        self._cast_inputs = dtype != torch.float32  # fp32 leaves e.g. FP64 inputs alone
        use_graphs = cuda_graphs and device.type == "cuda" and view.row_independent
        self.stream = torch.cuda.Stream(device) if device.type == "cuda" else None
        self.graphs = GraphCache(self.forward, device, self.stream) if use_graphs else None

    def describe(self) -> str:
        return f"{self.device}: {type(self.module).__name__}"

    def failure(self) -> str | None:
        return None

    @property
    def graph_count(self) -> int:
        return 0 if self.graphs is None else len(self.graphs.graphs)

    def close(self) -> None:
        if self.graphs is not None:
            self.graphs.graphs.clear()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    # -- the captured part -------------------------------------------------------------
    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        if self._cast_inputs:  # fp16/bf16/int8: float inputs join the compute dtype
            inputs = tuple(x.to(self.dtype) if x.is_floating_point() else x for x in inputs)
        result = normalize_outputs(self.module(*inputs), self.outputs)
        return tuple(
            r if dt is None or r.dtype == dt else r.to(dt)
            for r, dt in zip(result, self._out_dtypes, strict=True)
        )

    # -- host side ---------------------------------------------------------------------
    def prepare_batch(self, host: dict[str, Tensor]) -> tuple[torch.Tensor, ...]:
        """Host tensors -> CPU torch tensors in signature order (model preprocessing)."""
        return self.view.prepare_inputs(host)

    @torch.inference_mode()
    def run_model(self, inputs: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """One batch of CPU tensors -> CPU outputs with the same batch size."""
        n = inputs[0].shape[0]
        graph = self._find_graph(inputs, n)
        with self._on_stream():
            if graph is not None:  # padded to its bucket, replayed, sliced back to n rows
                return graph.replay(inputs, n)
            if self.device.type == "cpu":
                return self.forward(*inputs)
            on_device = tuple(x.to(self.device, non_blocking=True) for x in inputs)
            outputs = tuple(o.to("cpu", non_blocking=True) for o in self.forward(*on_device))
            torch.cuda.current_stream().synchronize()
            return outputs

    def _on_stream(self) -> Any:
        return contextlib.nullcontext() if self.stream is None else torch.cuda.stream(self.stream)

    def _find_graph(self, inputs: tuple[torch.Tensor, ...], n: int) -> Any:
        if self.graphs is None:
            return None
        bucket = pick_bucket(n, self.buckets)
        if bucket is None:
            return None
        key = ((bucket, *shape[1:]) for shape in shape_key(inputs))
        return self.graphs.get(tuple(key))

    @torch.inference_mode()
    def capture_graphs(self) -> int:
        """Warm every bucket (largest first); capture a graph per shape on CUDA."""
        count = 0
        for bucket in sorted(self.buckets, reverse=True):
            examples = self.view.example_inputs(bucket)
            if self.graphs is None:  # eager: one run per bucket touches every code path
                examples = examples[:1]
            for example in examples:
                if self.graphs is not None:
                    self.graphs.capture_graph(example)
                self.run_model(example)  # (replays the new graph: the served path, end to end)
                count += 1
        return count


def normalize_outputs(result: Any, outputs: list[TensorInfo]) -> tuple[torch.Tensor, ...]:
    """A model's return value (tensor, tuple/list or dict) as a tuple in signature order."""
    if isinstance(result, torch.Tensor):
        values: tuple[Any, ...] = (result,)
    elif isinstance(result, dict):
        missing = [o.name for o in outputs if o.name not in result]
        if missing:
            raise KeyError(f"model returned no output {missing}; it returned {sorted(result)}")
        values = tuple(result[o.name] for o in outputs)
    elif isinstance(result, (tuple, list)):
        values = tuple(result)
    else:
        raise TypeError(f"model returned {type(result).__name__}, expected tensor/tuple/dict")
    if len(values) < len(outputs):
        raise ValueError(f"model returned {len(values)} outputs, signature has {len(outputs)}")
    return values[: len(outputs)]
