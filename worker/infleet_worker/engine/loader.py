"""load_engine: config -> a ready (not yet warmed-up) Engine.

The source is loaded by :mod:`.sources`; ``pipelineParallel = N > 1`` goes to
:mod:`.pipeline.build`, one device to :func:`build_torch_engine` here.

Every failure to load is a :class:`ModelLoadError` naming the source: the worker exits 1
and its pod never becomes Ready.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

from infleet_worker.config import WorkerConfig, effective_batch_buckets
from infleet_worker.engine.base import Engine, ModelLoadError, TensorInfo
from infleet_worker.engine.buckets import normalize_buckets
from infleet_worker.engine.device import select_device, set_cpu_threads
from infleet_worker.engine.pipeline.build import load_pipeline_engine
from infleet_worker.engine.precision import cast_precision, compute_dtype
from infleet_worker.engine.runner import ModelRunner
from infleet_worker.engine.sources import load_model
from infleet_worker.engine.torch_engine import TorchEngine
from infleet_worker.models.served import ServedView, as_tensor_infos

log = logging.getLogger(__name__)


def load_engine(cfg: WorkerConfig) -> Engine:
    """Load ``cfg.model`` for ``cfg.engine``; call ``warmup()`` on the result before Ready."""
    spec, engine_spec = cfg.model, cfg.engine
    if engine_spec.pipeline_parallel > 1:  # stages over several devices
        return load_pipeline_engine(cfg)
    device = select_device(engine_spec.device.value)
    if device.type == "cpu":
        set_cpu_threads()
    loaded, signature = load_model(spec.source, dict(spec.parameters))
    inputs = as_tensor_infos(spec.inputs) if spec.inputs else signature.get("inputs")
    outputs = as_tensor_infos(spec.outputs) if spec.outputs else signature.get("outputs")

    if not isinstance(loaded, nn.Module | torch.jit.ScriptModule) and isinstance(loaded, Engine):
        return adopt_engine(loaded, cfg, inputs, outputs)
    if not isinstance(loaded, nn.Module | torch.jit.ScriptModule):
        raise ModelLoadError(
            f"{spec.source}: factory returned {type(loaded).__name__}, expected an nn.Module "
            "or an object implementing the Engine protocol"
        )
    return build_torch_engine(loaded, cfg, device, inputs, outputs)


def build_torch_engine(
    module: nn.Module,
    cfg: WorkerConfig,
    device: torch.device,
    inputs: list[TensorInfo] | None = None,
    outputs: list[TensorInfo] | None = None,
) -> TorchEngine:
    """A loaded module -> signature view -> precision cast -> runner -> TorchEngine."""
    spec, engine_spec = cfg.model, cfg.engine
    try:
        view = ServedView(module, inputs, outputs)
    except ValueError as exc:
        raise ModelLoadError(f"{spec.source}: {exc}") from exc
    precision = engine_spec.precision.value
    try:
        view.module = cast_precision(view.module, precision, device)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{spec.source}: {exc}") from exc
    except Exception as exc:
        raise ModelLoadError(f"{spec.source}: cannot cast to {precision}: {exc}") from exc
    max_batch = cfg.engine_max_batch_size  # adaptive batching's, when larger
    buckets = normalize_buckets(effective_batch_buckets(engine_spec, cfg.batching), max_batch)
    runner = ModelRunner(
        view, device, compute_dtype(precision, device), buckets, engine_spec.cuda_graphs
    )
    log.info(
        "loaded %s %s on %s, %s, buckets %s, CUDA graphs %s",
        spec.source,
        view.describe(),
        device,
        precision,
        buckets,
        runner.graphs is not None,
    )
    return TorchEngine(spec.name, spec.version, runner, max_batch, engine_spec.warmup)


def adopt_engine(
    engine: Any,
    cfg: WorkerConfig,
    inputs: list[TensorInfo] | None,
    outputs: list[TensorInfo] | None,
) -> Engine:
    """An Engine a factory built: served under the config's name, version and batch size."""
    engine.name, engine.version = cfg.model.name, cfg.model.version
    if not getattr(engine, "max_batch_size", 0):
        engine.max_batch_size = cfg.engine_max_batch_size
    if inputs:
        engine.inputs = inputs
    if outputs:
        engine.outputs = outputs
    log.info("loaded %s as an Engine (%s)", cfg.model.source, type(engine).__name__)
    result: Engine = engine
    return result
