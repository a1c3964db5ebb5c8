"""A simulated pod's life, the same in every fleet model: created, Ready, draining, gone.

Pods are paid from creation (start time included) until they are gone or the run
ends; a pod the autoscaler creates turns Ready after a replayed or jittered delay.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import numpy as np

STARTING, SERVING, DRAINING, GONE = range(4)


class Pod:
    """Lifecycle of one replica; each fleet model adds what it serves with."""

    __slots__ = ("created", "end", "state")

    def __init__(self, created: float) -> None:
        self.created, self.end, self.state = created, math.inf, STARTING

    def retire(self, now: float) -> None:
        self.state, self.end = GONE, now


class PodStarts:
    """Start-to-Ready of each pod the autoscaler creates, in order.

    The first ones replay a live run's (``replayed``); later ones take ``delay_s``
    with uniform +-``jitter`` drawn from the run's seed.
    """

    __slots__ = ("delay_s", "jitter", "replayed", "rng", "used")

    def __init__(
        self, delay_s: float, jitter: float, replayed: tuple[float, ...], seed: int
    ) -> None:
        self.delay_s, self.jitter, self.replayed = delay_s, jitter, replayed
        self.rng = np.random.default_rng(seed)
        self.used = 0

    def next(self) -> float:
        if self.used < len(self.replayed):
            self.used += 1
            return self.replayed[self.used - 1]
        return self.delay_s * (1.0 + self.jitter * (2.0 * self.rng.random() - 1.0))


def live_counts(pods: Iterable[Pod]) -> tuple[int, int]:
    """(current, ready): pods asked for (starting or serving), and those serving."""
    current = ready = 0
    for p in pods:
        if p.state == SERVING:
            ready += 1
            current += 1
        elif p.state == STARTING:
            current += 1
    return current, ready


def replica_seconds(pods: Iterable[Pod], end: float) -> float:
    seconds = 0.0
    for p in pods:
        seconds += max(0.0, min(p.end, end) - max(p.created, 0.0))
    return seconds
