"""Split a model into pipeline stages: find its blocks, balance them, honour user splits.

Where the blocks come from (first match wins):

1. ``model.stages()``: the builtin models' hook (blocks over a tuple state, see
   :mod:`infleet_worker.models.base`).
2. an ``nn.Sequential`` (e.g. from a ``python://`` factory): its children, called the
   way ``nn.Sequential`` calls them (one value in, one value out).
3. a ``python://`` factory that returns a *list* of modules names the stages itself:
   :func:`as_module` wraps it in a :class:`StageList` whose balance is one block per
   stage, so the user's split points are kept exactly.

How blocks group into ``n`` contiguous stages: ``model.pipeline_balance`` when the model
sets it (torchgpipe's ``balance``: blocks per stage, e.g. ``[3, 5]``; or ``"time"``),
else by parameter count (embedding tables count as free: a lookup is not a matmul).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from infleet_worker.engine.base import ModelLoadError

Balance = list[int]


class StageList(nn.Sequential):
    """A list of stages from a ``python://`` factory: the split points are the user's."""

    def __init__(self, stages: Sequence[nn.Module]) -> None:
        super().__init__(*stages)
        self.pipeline_balance: Balance | str = [1] * len(stages)
        for attr in ("inputs", "outputs", "row_independent"):
            owner = stages[0] if attr == "inputs" else stages[-1]
            if hasattr(owner, attr):
                setattr(self, attr, getattr(owner, attr))


def as_module(loaded: Any) -> Any:
    """A factory's list/tuple of modules as a :class:`StageList`; anything else unchanged."""
    if (
        isinstance(loaded, list | tuple)
        and loaded
        and all(isinstance(s, nn.Module) for s in loaded)
    ):
        return StageList(loaded)
    return loaded


def model_blocks(model: nn.Module) -> tuple[list[nn.Module], bool]:
    """The model's splittable blocks, and whether they pass a tuple state (``stages()``)."""
    hook = getattr(model, "stages", None)
    if callable(hook):
        return list(hook()), True
    if isinstance(model, nn.Sequential):
        return list(model.children()), False
    return [model], False


def check_stages(n_blocks: int, stages: int, what: str = "the model") -> None:
    """``stages`` pipeline stages need at least as many splittable blocks."""
    if stages > n_blocks:
        raise ModelLoadError(
            f"pipelineParallel={stages} needs at least {stages} splittable blocks, but {what} "
            f"has {n_blocks}: give the module a stages() method returning its blocks, or have "
            "the python:// factory return an nn.Sequential or a list of stages"
        )


def block_cost(block: nn.Module) -> float:
    """Parameters a block multiplies by (embedding tables excluded), plus one."""
    embedded = {
        id(p) for m in block.modules() if isinstance(m, nn.Embedding) for p in m.parameters()
    }
    return 1.0 + sum(p.numel() for p in block.parameters() if id(p) not in embedded)


def balance_costs(costs: Sequence[float], stages: int) -> Balance:
    """Blocks per stage: contiguous groups, each non-empty, minimizing the largest sum.

    An exact dynamic programme (blocks and stages are few); ties go to the earliest cut.

    >>> balance_costs([1, 1, 1, 1], 2)
    [2, 2]
    >>> balance_costs([5, 1, 1, 1, 1, 1], 2)
    [1, 5]
    """
    n = len(costs)
    check_stages(n, stages, "the cost list")
    if stages < 1:
        raise ValueError(f"stages must be >= 1, got {stages}")
    prefix = [0.0]
    for c in costs:
        prefix.append(prefix[-1] + float(c))
    inf = float("inf")
    # best[s][i]: the smallest max-stage cost splitting the first i blocks into s stages.
    best = [[inf] * (n + 1) for _ in range(stages + 1)]
    cut = [[0] * (n + 1) for _ in range(stages + 1)]
    best[0][0] = 0.0
    for s in range(1, stages + 1):
        for i in range(s, n - (stages - s) + 1):
            for k in range(s - 1, i):
                value = max(best[s - 1][k], prefix[i] - prefix[k])
                if value < best[s][i]:
                    best[s][i], cut[s][i] = value, k
    balance, i = [], n
    for s in range(stages, 0, -1):
        k = cut[s][i]
        balance.append(i - k)
        i = k
    return balance[::-1]


def balance_by_params(blocks: Sequence[nn.Module], stages: int) -> Balance:
    return balance_costs([block_cost(b) for b in blocks], stages)


def measure_block_times(
    blocks: Sequence[nn.Module],
    devices: Sequence[torch.device],
    value: Any,
    move: Callable[[Any, torch.device], Any],
    repeat: int = 3,
) -> list[float]:
    """Seconds each block takes on its device (``devices[i]``) for one sample ``value``.

    ``move`` carries the state to a block's device. The first pass warms up; the median
    of ``repeat`` timed passes is kept per block.
    """
    samples: list[list[float]] = [[] for _ in blocks]
    with torch.inference_mode():
        for rep in range(repeat + 1):
            state = value
            for index, (block, device) in enumerate(zip(blocks, devices, strict=True)):
                state = move(state, device)
                synchronize(device)
                start = time.perf_counter()
                state = block(state)
                synchronize(device)
                if rep:
                    samples[index].append(time.perf_counter() - start)
    return [sorted(s)[len(s) // 2] for s in samples]


def balance_by_time(times: Sequence[float], stages: int) -> Balance:
    # A floor keeps a free block (e.g. an activation) from looking like nothing at all.
    floor = max(times) * 1e-3 if times else 0.0
    return balance_costs([max(t, floor) for t in times], stages)


def user_balance(model: nn.Module, n_blocks: int, stages: int) -> Balance | str | None:
    """``model.pipeline_balance`` validated against the blocks, or None when unset."""
    balance = getattr(model, "pipeline_balance", None)
    if balance is None or balance in ("params", "time"):
        return balance
    if not isinstance(balance, list | tuple) or not all(isinstance(b, int) for b in balance):
        raise ModelLoadError(
            f"pipeline_balance must be a list of block counts or 'params'/'time', got {balance!r}"
        )
    if len(balance) != stages:
        raise ModelLoadError(
            f"the model names {len(balance)} pipeline stages (pipeline_balance={list(balance)}) "
            f"but engine.pipelineParallel is {stages}; make them agree"
        )
    if any(b < 1 for b in balance) or sum(balance) != n_blocks:
        raise ModelLoadError(
            f"pipeline_balance={list(balance)} must be positive counts summing to the "
            f"model's {n_blocks} blocks"
        )
    return list(balance)


def split_blocks(blocks: Sequence[nn.Module], balance: Sequence[int]) -> list[nn.Sequential]:
    """Group blocks into one ``nn.Sequential`` per stage (blocks are shared, not copied)."""
    if sum(balance) != len(blocks) or any(b < 1 for b in balance):
        raise ValueError(f"balance {list(balance)} does not cover {len(blocks)} blocks")
    groups, start = [], 0
    for count in balance:
        groups.append(nn.Sequential(*blocks[start : start + count]))
        start += count
    return groups


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
