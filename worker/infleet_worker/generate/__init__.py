"""Generative (decoder-only) models: a paged KV-cache engine with continuous batching.

This module stays torch-free so the worker's CLI can ask :func:`is_generative`
before deciding which serving layout to start.
"""

from __future__ import annotations

import json
from pathlib import Path

BUILTIN_SOURCES = ("builtin://llama",)


def is_generative(source: str) -> bool:
    """True for ``builtin://llama`` and for a ``file://`` directory holding a Hugging Face
    checkpoint whose config.json names a ``*ForCausalLM`` architecture."""
    if source in BUILTIN_SOURCES:
        return True
    if not source.startswith("file://"):
        return False
    path = Path(source[len("file://") :])
    try:
        doc = json.loads((path / "config.json").read_text())
    except (OSError, ValueError):
        return False
    archs = doc.get("architectures") if isinstance(doc, dict) else None
    return isinstance(archs, list) and any(
        isinstance(a, str) and a.endswith("ForCausalLM") for a in archs
    )


def wants_generation(source: str, task: str | None) -> bool:
    """Whether the worker runs the generation engine: ``model.task`` when set (it must
    agree with the source), else inferred from the source."""
    generative = is_generative(source)
    if task is None or (task == "generate") == generative:
        return generative
    if task == "generate":
        raise ValueError(
            f"model.task is generate but {source} is not a generative model "
            "(builtin://llama, or a file:// checkpoint whose config.json names a *ForCausalLM)"
        )
    raise ValueError(f"model.task is {task} but {source} is a generative model: use generate")
