"""The GPipe schedule, forward only: pure functions, no torch, no threads.

A batch is cut into ``m`` micro-batches that flow through ``n`` stages. At clock ``k``
stage ``j`` works on micro-batch ``k - j``: the pipeline fills for ``n - 1`` clocks,
runs full, and drains for ``n - 1`` clocks (``m + n - 1`` clocks in all). Within one
clock the tasks are independent (different stages, different micro-batches), and every
task's input was produced in an earlier clock, so a driver that waits for the whole
clock before starting the next one needs no other synchronization (torchgpipe's
``clock_cycles``).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

# (micro-batch index, stage index)
Task = tuple[int, int]


def clock_cycles(m: int, n: int) -> Iterator[list[Task]]:
    """The tasks of each clock for ``m`` micro-batches and ``n`` stages.

    >>> list(clock_cycles(3, 2))
    [[(0, 0)], [(1, 0), (0, 1)], [(2, 0), (1, 1)], [(2, 1)]]
    """
    if m < 1 or n < 1:
        raise ValueError(f"need at least one micro-batch and one stage, got m={m}, n={n}")
    for k in range(m + n - 1):
        yield [(k - j, j) for j in range(max(0, k - m + 1), min(k + 1, n))]


def split_sizes(batch: int, chunks: int) -> list[int]:
    """Rows per micro-batch: ``min(chunks, batch)`` near-equal parts, larger ones first.

    Unlike ``torch.chunk`` the parts differ by at most one row (10 rows in 4 chunks are
    3, 3, 2, 2, not 3, 3, 3, 1), and asking for more chunks than rows gives one row each.

    >>> split_sizes(10, 4)
    [3, 3, 2, 2]
    >>> split_sizes(2, 8)
    [1, 1]
    """
    if batch < 1:
        raise ValueError(f"batch must have at least one row, got {batch}")
    if chunks < 1:
        raise ValueError(f"micro-batches must be >= 1, got {chunks}")
    parts = min(chunks, batch)
    base, extra = divmod(batch, parts)
    return [base + 1 if i < extra else base for i in range(parts)]


def offsets(sizes: Sequence[int]) -> list[tuple[int, int]]:
    """``(start, stop)`` row ranges of consecutive parts."""
    spans, start = [], 0
    for size in sizes:
        spans.append((start, start + size))
        start += size
    return spans


def micro_batch_buckets(buckets: Sequence[int], chunks: int) -> list[int]:
    """Micro-batch sizes to capture per-stage CUDA graphs for, given whole-batch buckets.

    A batch of ``b`` rows splits into parts of at most ``ceil(b / chunks)`` rows, so those
    sizes cover every bucket; a micro-batch pads up to the smallest one that holds it.
    """
    return sorted({max(split_sizes(b, chunks)) for b in buckets if b >= 1})


def check_order(trace: Sequence[tuple[int, int, float, float]]) -> None:
    """Assert a trace of ``(micro_batch, stage, start, end)`` obeys the schedule.

    Stage ``j`` starts micro-batch ``i`` only after stage ``j-1`` finished it, and each
    stage takes micro-batches in order. Raises AssertionError naming the violation.
    """
    done = {(i, j): end for i, j, _, end in trace}
    last_start: dict[int, tuple[int, float]] = {}
    for i, j, start, _ in sorted(trace, key=lambda t: (t[1], t[2])):
        if j > 0:
            prev = done.get((i, j - 1))
            assert prev is not None, f"stage {j} ran micro-batch {i} that stage {j - 1} never ran"
            assert prev <= start, f"stage {j} started micro-batch {i} before stage {j - 1} ended"
        if j in last_start:
            assert last_start[j][0] < i, f"stage {j} ran micro-batch {i} out of order"
        last_start[j] = (i, start)
