"""load_engine: config -> a ready (not yet warmed-up) Engine.

Sources:
- ``builtin://NAME``: a reference model from :mod:`infleet_worker.models`.
- ``file:///path``: TorchScript (``torch.jit.save``) or torch.export (``.pt2``,
  ``torch.export.save``). Signature from the config, else from an
  ``infleet_signature.json`` extra file saved with the model, else (torch.export only)
  inferred from the exported graph.
- ``python://pkg.module:factory``: ``factory(parameters)`` returns an ``nn.Module``
  (signature as for builtins, see :mod:`infleet_worker.models.base`) or an object that
  implements the Engine protocol itself.

Every failure to load is a :class:`ModelLoadError` naming the source: the worker exits 1
and its pod never becomes Ready.
"""

from __future__ import annotations

import importlib
import json
import logging
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infleet_worker.config import WorkerConfig, effective_batch_buckets
from infleet_worker.engine.base import Engine, ModelLoadError, TensorInfo
from infleet_worker.engine.buckets import normalize_buckets
from infleet_worker.engine.device import select_device, set_cpu_threads
from infleet_worker.engine.precision import cast_precision, compute_dtype
from infleet_worker.engine.runner import ModelRunner
from infleet_worker.engine.torch_engine import TorchEngine
from infleet_worker.models import builtin_factory
from infleet_worker.models.served import ServedView, as_tensor_infos

log = logging.getLogger(__name__)

SIGNATURE_FILE = "infleet_signature.json"


def load_engine(cfg: WorkerConfig) -> Engine:
    """Load ``cfg.model`` for ``cfg.engine``; call ``warmup()`` on the result before Ready."""
    spec, engine_spec = cfg.model, cfg.engine
    if engine_spec.pipeline_parallel > 1:  # stages over several devices (issue 8)
        from infleet_worker.engine.pipeline.build import load_pipeline_engine  # imports us

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
    max_batch = cfg.batching.max_batch_size
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


def load_model(source: str, parameters: dict[str, str]) -> tuple[Any, dict[str, list[TensorInfo]]]:
    """The object a source names, plus any signature stored beside it."""
    scheme, _, rest = source.partition("://")
    try:
        if scheme == "builtin":
            return builtin_factory(rest)(parameters), {}
        if scheme == "file":
            return load_file(Path(rest))
        if scheme == "python":
            return load_python(rest, parameters), {}
    except ModelLoadError as exc:
        raise ModelLoadError(f"{source}: {exc}") from exc
    except Exception as exc:
        raise ModelLoadError(f"{source}: {type(exc).__name__}: {exc}") from exc
    raise ModelLoadError(f"{source}: unknown source scheme {scheme!r} (builtin, file, python)")


def load_file(path: Path) -> tuple[nn.Module, dict[str, list[TensorInfo]]]:
    if not path.is_file():
        raise ModelLoadError(f"model file {path} does not exist (is the volume mounted?)")
    extra = {SIGNATURE_FILE: ""}
    if path.suffix == ".pt2":
        try:
            program = torch.export.load(str(path), extra_files=extra)
        except Exception as exc:
            raise ModelLoadError(f"not a torch.export program: {exc}") from exc
        signature = read_signature(extra[SIGNATURE_FILE]) or exported_signature(program)
        return program.module(), signature
    try:
        module = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
    except Exception as exc:
        raise ModelLoadError(f"not a TorchScript file (use .pt2 for torch.export): {exc}") from exc
    return module, read_signature(extra[SIGNATURE_FILE])


def read_signature(text: str | bytes) -> dict[str, list[TensorInfo]]:
    if not text:
        return {}
    data = json.loads(text)
    return {k: as_tensor_infos(data[k]) for k in ("inputs", "outputs") if k in data}


def exported_signature(program: Any) -> dict[str, list[TensorInfo]]:
    """Inputs named like forward's arguments; outputs ``output`` or ``output_<i>``."""
    from infleet_worker.models.base import TRITON_DATATYPES

    def info(name: str, val: Any) -> TensorInfo:
        item = tuple(d if isinstance(d, int) else -1 for d in val.shape[1:])
        return TensorInfo(name, TRITON_DATATYPES[val.dtype], item)  # type: ignore[arg-type]

    nodes = {n.name: n for n in program.graph.nodes}
    user_inputs = program.graph_signature.user_inputs
    inputs = [info(str(name), nodes[str(name)].meta["val"]) for name in user_inputs]
    output_node = next(n for n in program.graph.nodes if n.op == "output")
    flat = output_node.args[0]
    user_outputs = list(flat)[-len(program.graph_signature.user_outputs) :]
    names = ["output"] if len(user_outputs) == 1 else [f"output_{i}" for i in range(len(flat))]
    outputs = [info(nm, node.meta["val"]) for nm, node in zip(names, user_outputs, strict=False)]
    return {"inputs": inputs, "outputs": outputs}


def load_python(target: str, parameters: dict[str, str]) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise ModelLoadError(f"cannot import {module_name}: {type(exc).__name__}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ModelLoadError(f"{module_name} has no callable {attr!r}")
    try:
        return factory(parameters)
    except Exception as exc:
        raise ModelLoadError(f"factory {attr} raised {type(exc).__name__}: {exc}") from exc


def adopt_engine(
    engine: Any,
    cfg: WorkerConfig,
    inputs: list[TensorInfo] | None,
    outputs: list[TensorInfo] | None,
) -> Engine:
    """An Engine a factory built: served under the config's name, version and batch size."""
    engine.name, engine.version = cfg.model.name, cfg.model.version
    if not getattr(engine, "max_batch_size", 0):
        engine.max_batch_size = cfg.batching.max_batch_size
    if inputs:
        engine.inputs = inputs
    if outputs:
        engine.outputs = outputs
    log.info("loaded %s as an Engine (%s)", cfg.model.source, type(engine).__name__)
    result: Engine = engine
    return result
