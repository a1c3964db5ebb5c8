"""Priority shedding in the simulated shared queue: refuse the lowest priority first.

Each request has a priority level (1 = highest). At arrival, level L >= 2 is
refused (a fast 503, never queued) while the admitted queue is longer than
``queue_per_replica x serving replicas / (L - 1)``: the lowest level goes first,
level 1 never. Admission is decided when the simulator next looks at the
queue, which is at most one batch after the arrival.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import numpy as np


def assign_priorities(n: int, shares: Sequence[float], seed: int) -> list[int]:
    """Level (1-based) per request, drawn with the given share per level."""
    p = np.asarray(shares, dtype=np.float64)
    if len(p) == 0 or (p < 0).any() or p.sum() <= 0:
        raise ValueError(f"priority shares must be non-negative and not all zero: {shares}")
    rng = np.random.default_rng(seed + 7919)
    levels = rng.choice(np.arange(1, len(p) + 1), size=n, p=p / p.sum())
    return [int(x) for x in levels]


class Shedder:
    def __init__(self, priorities: list[int], queue_per_replica: float) -> None:
        self.prio = priorities
        self.refused = bytearray(len(priorities))
        self.queue_per_replica = queue_per_replica
        self.upto = 0  # admission decided for requests below this index

    def admit(self, arr: list[float], now: float, head: int, serving: int) -> None:
        """Decide admission for the requests that arrived since the last call."""
        g = bisect_right(arr, now, self.upto)
        if g <= self.upto:
            return
        base = self.queue_per_replica * max(serving, 1)
        refused, prio = self.refused, self.prio
        waiting = (self.upto - head) - refused.count(1, head, self.upto)
        for i in range(self.upto, g):
            level = prio[i]
            if level >= 2 and waiting > base / (level - 1):
                refused[i] = 1
            else:
                waiting += 1
        self.upto = g

    def skip(self, head: int) -> int:
        """First index at or after ``head`` that was not refused (among those decided)."""
        refused, upto = self.refused, self.upto
        while head < upto and refused[head]:
            head += 1
        return head

    def take(self, head: int, stop: int, full: int, out: list[list[int]]) -> tuple[int, int]:
        """Admitted requests in [head, stop), up to ``full``, as (start, count, 1) records.

        Returns (how many, the new head).
        """
        refused, taken, i = self.refused, 0, head
        while i < stop and taken < full:
            if refused[i]:
                i += 1
                continue
            j = i
            while j < stop and taken < full and not refused[j]:
                j += 1
                taken += 1
            out[0].append(i)
            out[1].append(j - i)
            out[2].append(1)
            i = j
        return taken, i

    def pending(self, head: int) -> int:
        """Refused requests at or after ``head`` (not waiting, though still in the range)."""
        return self.refused.count(1, head, self.upto)

    def mask(self) -> np.ndarray:
        return np.frombuffer(bytes(self.refused), dtype=np.uint8).astype(bool)
