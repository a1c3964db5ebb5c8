"""Builtin reference models (``builtin://NAME``), built at load time from a fixed seed."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

# name -> module holding ``build(parameters: dict[str, str])`` (imported on demand).
BUILTIN_MODELS: dict[str, str] = {
    "mlp": "infleet_worker.models.mlp",
    "encoder-base": "infleet_worker.models.encoder",
    "minilm": "infleet_worker.models.minilm",
    "synthetic": "infleet_worker.models.synthetic",
}


def builtin_factory(name: str) -> Callable[[dict[str, str]], Any]:
    """The ``build`` function of a builtin; KeyError names the builtins that exist."""
    if name not in BUILTIN_MODELS:
        raise KeyError(f"no builtin model {name!r}; builtins: {', '.join(sorted(BUILTIN_MODELS))}")
    build: Callable[[dict[str, str]], Any] = importlib.import_module(BUILTIN_MODELS[name]).build
    return build
