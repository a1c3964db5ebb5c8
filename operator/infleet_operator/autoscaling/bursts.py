"""How fast load rises within one pod start, learned from the trace's own history.

For every past tick tau the estimator records the relative rise
``max(rate over (tau, tau + lead]) / rate(tau) - 1`` once that window has been
seen, keeps the rises of the last ``history_s`` seconds in a sorted list, and
answers their quantile: the headroom that would have absorbed that share of
the bursts this service has seen while a new pod started.
"""

from __future__ import annotations

import math
from bisect import bisect_left, insort
from collections import deque


class RiseQuantile:
    """Quantile of the relative rise of a rate series over one lead time."""

    MIN_SAMPLES = 20  # answer 0 until this many windows have completed

    def __init__(self, lead_s: float, history_s: float, floor_rate: float = 1.0) -> None:
        self.lead_s, self.history_s, self.floor = lead_s, history_s, floor_rate
        self._open: deque[list[float]] = deque()  # [tau, rate at tau, max rate since]
        self._done: deque[tuple[float, float]] = deque()  # (tau, rise), in time order
        self._sorted: list[float] = []

    def update(self, t: float, rate: float) -> None:
        if not math.isfinite(rate):
            return
        while self._open and self._open[0][0] + self.lead_s < t:
            tau, base, peak = self._open.popleft()
            rise = max(peak, 0.0) / max(base, self.floor) - 1.0
            self._done.append((tau, rise))
            insort(self._sorted, rise)
        for w in self._open:
            if rate > w[2]:
                w[2] = rate
        self._open.append([t, rate, rate])
        while self._done and self._done[0][0] < t - self.history_s:
            _, old = self._done.popleft()
            del self._sorted[bisect_left(self._sorted, old)]

    @property
    def samples(self) -> int:
        return len(self._sorted)

    def quantile(self, q: float) -> float:
        """Rise at quantile ``q`` (0 while the history is too short)."""
        n = len(self._sorted)
        if n < self.MIN_SAMPLES:
            return 0.0
        return max(0.0, self._sorted[min(n - 1, int(q * n))])
