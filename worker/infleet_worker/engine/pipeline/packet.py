"""What flows through the pipeline: packets between stages, tasks to them, answers back.

A :class:`Packet` is the state between stages: a flat tuple of tensors, whether the
blocks see it as a tuple (``packed``) or as one tensor, and on CUDA the event recorded on
the producing stage's stream after it wrote them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

Tensors = tuple[torch.Tensor, ...]


@dataclass
class Packet:
    """The state flowing between stages (see the module docstring)."""

    tensors: Tensors
    packed: bool
    event: Any = None  # torch.cuda.Event on CUDA


@dataclass
class Done:
    """A stage's answer for one task: its output packet, or the exception it raised."""

    batch: int
    micro_batch: int
    stage: int
    packet: Packet | None = None
    error: BaseException | None = None


@dataclass
class Task:
    """Run ``packet`` as micro-batch ``micro_batch`` of ``batch``; or, when ``capture`` is
    set, capture this stage's CUDA graph for ``packet`` padded to that many rows."""

    batch: int
    micro_batch: int
    packet: Packet
    capture: int | None = None


def to_tuple(value: Any) -> tuple[Tensors, bool]:
    """A block's return value as (tensors, packed)."""
    if isinstance(value, torch.Tensor):
        return (value,), False
    if isinstance(value, tuple | list) and all(isinstance(v, torch.Tensor) for v in value):
        return tuple(value), True
    raise TypeError(
        f"a pipeline stage must return a tensor or a tuple of tensors, got {type(value).__name__}"
    )


def rows(tensors: Sequence[torch.Tensor]) -> int:
    return int(tensors[0].shape[0])
