"""load_pipeline_engine: ``engine.pipelineParallel = N`` -> N stages, one per device.

The loader calls this for N > 1. It loads the model like the single-device path,
finds its blocks (:mod:`.partition`), groups them into N stages, casts each stage to
the precision on its own device, and serves them with the ordinary
:class:`~infleet_worker.engine.torch_engine.TorchEngine` over a :class:`.runner.PipelineRunner`.

Devices: on CUDA ``cuda:0 .. cuda:N-1``; when fewer GPUs are visible the stages go
round-robin over them (logged), which keeps a one-GPU test machine working. On CPU every
stage is a CPU "device" with its own thread and a share of the cores.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from infleet_worker.config import WorkerConfig, effective_batch_buckets
from infleet_worker.engine.base import Engine, ModelLoadError
from infleet_worker.engine.buckets import normalize_buckets
from infleet_worker.engine.device import engine_cpus, select_device
from infleet_worker.engine.pipeline.partition import (
    Balance,
    as_module,
    balance_by_params,
    balance_by_time,
    check_stages,
    measure_block_times,
    model_blocks,
    split_blocks,
    user_balance,
)
from infleet_worker.engine.pipeline.runner import PipelineRunner
from infleet_worker.engine.pipeline.schedule import split_sizes
from infleet_worker.engine.precision import (
    QUANTIZED,
    cast_precision,
    check_precision,
    compute_dtype,
)
from infleet_worker.engine.sources import load_model
from infleet_worker.engine.torch_engine import TorchEngine
from infleet_worker.models.served import ServedView, as_tensor_infos

log = logging.getLogger(__name__)


def stage_devices(stages: int, device: torch.device) -> list[torch.device]:
    """One device per stage: CUDA round-robin over the visible GPUs, or CPU threads."""
    if device.type != "cuda":
        return [torch.device("cpu")] * stages
    visible = torch.cuda.device_count()
    if visible < stages:
        log.warning(
            "pipelineParallel=%d but %d GPU(s) visible: stages share GPUs round-robin "
            "(each stage keeps its own CUDA stream)",
            stages,
            visible,
        )
    return [torch.device("cuda", j % visible) for j in range(stages)]


def cast_stage(stage: nn.Module, precision: str, device: torch.device) -> nn.Module:
    """``cast_precision`` per stage; a quantized stage with no Linear just takes the dtype."""
    if precision in QUANTIZED and not any(isinstance(m, nn.Linear) for m in stage.modules()):
        dtype = compute_dtype(precision, device)
        check_precision(precision, device)
        precision = "bf16" if dtype == torch.bfloat16 else "fp32"
    return cast_precision(stage, precision, device)


def load_pipeline_engine(cfg: WorkerConfig) -> Engine:
    spec, engine_spec = cfg.model, cfg.engine
    n = engine_spec.pipeline_parallel
    device = select_device(engine_spec.device.value)
    loaded, signature = load_model(spec.source, dict(spec.parameters))
    module = as_module(loaded)
    if not isinstance(module, nn.Module):
        raise ModelLoadError(
            f"{spec.source}: pipelineParallel={n} needs a torch model to split into stages; "
            f"the source gave a {type(module).__name__} (set pipelineParallel to 1)"
        )
    inputs = as_tensor_infos(spec.inputs) if spec.inputs else signature.get("inputs")
    outputs = as_tensor_infos(spec.outputs) if spec.outputs else signature.get("outputs")
    try:
        view = ServedView(module, inputs, outputs)
    except ValueError as exc:
        raise ModelLoadError(f"{spec.source}: {exc}") from exc
    try:
        return build_pipeline(cfg, view, device)
    except ModelLoadError as exc:
        raise ModelLoadError(f"{spec.source}: {exc}") from exc


def build_pipeline(
    cfg: WorkerConfig,
    view: ServedView,
    device: torch.device,
    trace: bool = False,
    cpu_threads: int | None = None,
    stage_timeout: float | None = None,
) -> TorchEngine:
    """Split ``view.module`` into ``cfg.engine.pipelineParallel`` stages and serve them.

    On CPU each stage thread gets ``cpu_threads`` intra-op threads, by default an equal
    share of the cores (threads beyond the cores would spin against each other).
    ``stage_timeout``: the watchdog's bound in seconds (default
    :func:`.runner.default_stage_timeout`).
    """
    engine_spec = cfg.engine
    n = engine_spec.pipeline_parallel
    precision = engine_spec.precision.value
    blocks, tuple_state = model_blocks(view.module)
    check_stages(len(blocks), n)
    devices = stage_devices(n, device)
    wanted = user_balance(view.module, len(blocks), n)
    balance = wanted if isinstance(wanted, list) else balance_by_params(blocks, n)
    max_batch = cfg.engine_max_batch_size  # adaptive batching's, when larger
    buckets = normalize_buckets(effective_batch_buckets(engine_spec, cfg.batching), max_batch)
    dtype = compute_dtype(precision, device)
    stages = place(blocks, balance, devices, precision)
    if wanted == "time":
        sample = view.example_inputs(max(split_sizes(max_batch, engine_spec.micro_batches)))[0]
        balance = timed_balance(blocks, balance, devices, sample, dtype, tuple_state)
        stages = place(blocks, balance, devices, precision)
    if device.type == "cpu" and cpu_threads is None:
        cpu_threads = max(1, engine_cpus() // n)
    runner = PipelineRunner(
        view,
        stages,
        devices,
        dtype,
        buckets,
        engine_spec.micro_batches,
        engine_spec.cuda_graphs,
        tuple_state,
        trace=trace,
        cpu_threads=cpu_threads,
        stage_timeout=stage_timeout,
    )
    log.info(
        "pipeline: %d stages, balance %s, %d micro-batches, %s, buckets %s, CUDA graphs %s: %s",
        n,
        balance,
        runner.micro_batches,
        precision,
        buckets,
        runner.use_graphs,
        runner.describe(),
    )
    return TorchEngine(cfg.model.name, cfg.model.version, runner, max_batch, engine_spec.warmup)


def place(
    blocks: Sequence[nn.Module], balance: Balance, devices: Sequence[torch.device], precision: str
) -> list[nn.Module]:
    """Group blocks by ``balance`` and cast each group onto its stage's device."""
    stages = []
    for j, stage in enumerate(split_blocks(blocks, balance)):
        try:
            stages.append(cast_stage(stage, precision, devices[j]))
        except ModelLoadError:
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"cannot cast pipeline stage {j + 1} to {precision} on {devices[j]}: {exc}"
            ) from exc
    return stages


def timed_balance(
    blocks: Sequence[nn.Module],
    balance: Balance,
    devices: Sequence[torch.device],
    sample: tuple[torch.Tensor, ...],
    dtype: torch.dtype,
    tuple_state: bool,
) -> Balance:
    """Re-balance by measured block times (each block timed where it was first placed)."""
    block_devices = [devices[j] for j, count in enumerate(balance) for _ in range(count)]
    cast = tuple(x.to(dtype) if x.is_floating_point() else x for x in sample)
    state: Any = cast if tuple_state or len(cast) > 1 else cast[0]
    times = measure_block_times(blocks, block_devices, state, move_state)
    timed = balance_by_time(times, len(balance))
    log.info("pipeline: block times %s ms -> balance %s", [round(t * 1e3, 2) for t in times], timed)
    return timed


def move_state(state: Any, device: torch.device) -> Any:
    if isinstance(state, torch.Tensor):
        return state.to(device)
    if isinstance(state, tuple | list):
        return type(state)(move_state(s, device) for s in state)
    return state
