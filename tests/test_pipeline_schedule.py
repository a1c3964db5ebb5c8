"""The GPipe schedule and the stage balancing: pure functions, no threads."""

from __future__ import annotations

import itertools

import pytest
from torch import nn

from infleet_worker.engine.base import ModelLoadError
from infleet_worker.engine.pipeline.partition import (
    StageList,
    as_module,
    balance_by_params,
    balance_by_time,
    balance_costs,
    check_stages,
    model_blocks,
    split_blocks,
    user_balance,
)
from infleet_worker.engine.pipeline.schedule import (
    check_order,
    clock_cycles,
    micro_batch_buckets,
    offsets,
    split_sizes,
)


@pytest.mark.parametrize("m", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_clock_cycles_fill_and_drain(m: int, n: int) -> None:
    clocks = list(clock_cycles(m, n))
    assert len(clocks) == m + n - 1
    seen = [task for clock in clocks for task in clock]
    assert sorted(seen) == [(i, j) for i in range(m) for j in range(n)]  # each task once
    when = {task: k for k, clock in enumerate(clocks) for task in clock}
    for i in range(m):
        for j in range(n):
            assert when[(i, j)] == i + j
            if j:  # stage j runs micro-batch i strictly after stage j-1 did
                assert when[(i, j - 1)] < when[(i, j)]
            if i:  # per-stage order preserved
                assert when[(i - 1, j)] < when[(i, j)]
    for clock in clocks:  # one task per stage per clock
        assert len({j for _, j in clock}) == len(clock) <= min(m, n)


def test_clock_cycles_example_and_errors() -> None:
    assert list(clock_cycles(3, 2)) == [[(0, 0)], [(1, 0), (0, 1)], [(2, 0), (1, 1)], [(2, 1)]]
    with pytest.raises(ValueError):
        list(clock_cycles(0, 2))


@pytest.mark.parametrize(
    ("batch", "chunks", "sizes"),
    [
        (10, 4, [3, 3, 2, 2]),
        (8, 4, [2, 2, 2, 2]),
        (7, 3, [3, 2, 2]),
        (1, 4, [1]),
        (3, 8, [1, 1, 1]),  # more micro-batches than rows
        (5, 1, [5]),
    ],
)
def test_split_sizes(batch: int, chunks: int, sizes: list[int]) -> None:
    assert split_sizes(batch, chunks) == sizes
    spans = offsets(sizes)
    assert spans[0][0] == 0 and spans[-1][1] == batch
    assert all(a[1] == b[0] for a, b in itertools.pairwise(spans))


def test_split_sizes_rejects_empty() -> None:
    with pytest.raises(ValueError):
        split_sizes(0, 2)
    with pytest.raises(ValueError):
        split_sizes(4, 0)


def test_micro_batch_buckets_cover_every_bucket() -> None:
    assert micro_batch_buckets([1, 2, 4, 8, 16], 4) == [1, 2, 4]
    assert micro_batch_buckets([1, 3, 10], 4) == [1, 3]


def test_check_order_catches_violations() -> None:
    good = [(0, 0, 0.0, 1.0), (1, 0, 1.0, 2.0), (0, 1, 1.0, 2.0), (1, 1, 2.0, 3.0)]
    check_order(good)
    with pytest.raises(AssertionError, match="before stage 0 ended"):
        check_order([(0, 0, 0.0, 1.0), (0, 1, 0.5, 2.0)])
    with pytest.raises(AssertionError, match="out of order"):
        check_order([(1, 0, 0.0, 1.0), (0, 0, 1.0, 2.0)])


def test_balance_costs_minimizes_the_slowest_stage() -> None:
    assert balance_costs([1, 1, 1, 1], 2) == [2, 2]
    assert balance_costs([5, 1, 1, 1, 1, 1], 2) == [1, 5]
    assert balance_costs([1, 2, 3, 4, 5, 6], 3) == [3, 2, 1]
    assert balance_costs([1, 1, 1], 3) == [1, 1, 1]
    assert balance_by_time([0.0, 0.0, 1.0, 1.0], 2) == [3, 1]
    with pytest.raises(ModelLoadError, match="needs at least 4 splittable blocks"):
        balance_costs([1, 1, 1], 4)


def test_blocks_from_sequential_and_list() -> None:
    seq = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 4))
    blocks, tuple_state = model_blocks(seq)
    assert len(blocks) == 3 and not tuple_state
    # Parameter-free blocks cost (almost) nothing: the ReLU rides with a Linear.
    assert balance_by_params(blocks, 2) in ([1, 2], [2, 1])
    groups = split_blocks(blocks, [2, 1])
    assert [len(g) for g in groups] == [2, 1] and groups[0][0] is seq[0]
    user = as_module([nn.Linear(4, 4), nn.Linear(4, 4)])
    assert isinstance(user, StageList) and user_balance(user, 2, 2) == [1, 1]
    with pytest.raises(ModelLoadError, match=r"names 2 pipeline stages.*pipelineParallel is 3"):
        user_balance(user, 2, 3)
    assert model_blocks(nn.Linear(2, 2))[0][0].__class__ is nn.Linear
    with pytest.raises(ModelLoadError, match=r"pipelineParallel=2 needs at least 2 .*has 1"):
        check_stages(1, 2)


def test_user_balance_is_checked() -> None:
    model = nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2), nn.Linear(2, 2))
    assert user_balance(model, 3, 2) is None
    model.pipeline_balance = [1, 2]  # type: ignore[assignment]
    assert user_balance(model, 3, 2) == [1, 2]
    model.pipeline_balance = [2, 2]  # type: ignore[assignment]
    with pytest.raises(ModelLoadError, match="summing to the model's 3 blocks"):
        user_balance(model, 3, 2)
    model.pipeline_balance = "time"  # type: ignore[assignment]
    assert user_balance(model, 3, 2) == "time"
