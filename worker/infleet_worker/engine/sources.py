"""Model sources: a ``model.source`` URL -> the object it names, plus a stored signature.

- ``builtin://NAME``: a reference model from :mod:`infleet_worker.models`.
- ``file:///path``: TorchScript (``torch.jit.save``) or torch.export (``.pt2``,
  ``torch.export.save``). Signature from the config, else from an
  ``infleet_signature.json`` extra file saved with the model, else (torch.export only)
  inferred from the exported graph.
- ``python://pkg.module:factory``: ``factory(parameters)`` returns an ``nn.Module``
  (signature as for builtins, see :mod:`infleet_worker.models.base`), a list of modules
  (pipeline stages), or an object that implements the Engine protocol itself.

Every failure is a :class:`ModelLoadError` naming the source. Both the single-device
loader and the pipeline builder start here.
"""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from infleet_worker.engine.base import ModelLoadError, TensorInfo
from infleet_worker.models import builtin_factory
from infleet_worker.models.served import as_tensor_infos

SIGNATURE_FILE = "infleet_signature.json"


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
