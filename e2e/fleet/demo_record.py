"""What `make demo` records while it runs: progress lines for logs, and the end plot.

The plot is :func:`infleet_operator.simulator.plot.plot_timelines`, the one
``infleet simulate --plot`` draws, so the live run and a simulation of it can
be laid side by side.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infleet_operator.simulator.plot import Timeline


@dataclass
class StatusSample:
    t: float  # seconds since traffic started
    ready: int
    desired: int | None
    forecast: float | None


@dataclass
class DemoRecorder:
    samples: list[StatusSample] = field(default_factory=list)

    def add(self, t: float, obj: dict[str, Any]) -> StatusSample:
        st = obj.get("status") or {}
        auto = st.get("autoscaler") or {}
        s = StatusSample(
            t, int(st.get("readyReplicas") or 0), st.get("desiredReplicas"), auto.get("forecast")
        )
        self.samples.append(s)
        return s

    def timeline(self, stats: Any, bin_s: int = 5, label: str = "live") -> Timeline:
        """Traffic per ``bin_s`` from the client's per-second stats; replicas from status."""
        seconds: dict[int, Any] = stats.seconds
        last = max(seconds, default=0)
        nbins = last // bin_s + 1
        sent, ok, p99 = np.zeros(nbins), np.zeros(nbins), np.full(nbins, np.nan)
        for b in range(nbins):
            group = [seconds[s] for s in range(b * bin_s, (b + 1) * bin_s) if s in seconds]
            sent[b] = sum(g.sent for g in group) / bin_s
            ok[b] = sum(g.ok for g in group) / bin_s
            lat = sorted(x for g in group for x in g.latencies)
            if any(g.failed for g in group):
                p99[b] = math.inf
            elif lat:
                p99[b] = lat[min(len(lat) - 1, int(len(lat) * 0.99))] * 1000.0
        nan = float("nan")
        return Timeline(
            label=label,
            bin_t=np.arange(nbins, dtype=np.float64) * bin_s,
            offered=sent,
            served=ok,
            p99_ms=p99,
            tick_t=np.array([s.t for s in self.samples], dtype=np.float64),
            ready=np.array([s.ready for s in self.samples], dtype=np.float64),
            desired=np.array(
                [s.desired if s.desired is not None else nan for s in self.samples], np.float64
            ),
            forecast=np.array(
                [s.forecast if s.forecast is not None else nan for s in self.samples], np.float64
            ),
        )


def progress_line(t: float, phase: str, window: tuple[float, float, float, float, int],
                  s: StatusSample, failed_total: int) -> str:  # fmt: skip
    """One line for a log (stdout is not a terminal): what the live panel shows."""
    sent, ok, p50, p99, _ = window
    desired = "?" if s.desired is None else str(s.desired)
    forecast = "-" if s.forecast is None else f"{s.forecast:.0f}"
    return (
        f"t={t:4.0f}s {phase:<32} offered {sent:6.1f} req/s  served {ok:6.1f}  "
        f"p50 {p50:6.1f} ms  p99 {p99:7.1f} ms  replicas ready {s.ready} desired {desired}  "
        f"forecast {forecast} req/s  failed {failed_total}"
    )
