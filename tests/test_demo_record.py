"""`make demo` off a terminal: progress lines, and the end plot drawn like `simulate --plot`."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from fleet.demo_record import DemoRecorder, progress_line
from fleet.traffic import SecondStats, TrafficStats
from infleet_operator.simulator.plot import plot_timelines


def _status(ready: int, desired: int, forecast: float | None) -> dict[str, object]:
    auto = {"forecast": forecast} if forecast is not None else {}
    return {"status": {"readyReplicas": ready, "desiredReplicas": desired, "autoscaler": auto}}


def test_timeline_bins_the_clients_seconds_and_marks_failures(tmp_path: Path) -> None:
    stats = TrafficStats()
    for s in range(10):
        stats.seconds[s] = SecondStats(sent=20, ok=20, latencies=[0.010] * 19 + [0.200])
    stats.seconds[7].failed = 1
    rec = DemoRecorder()
    rec.add(0.5, _status(1, 1, None))
    rec.add(6.0, _status(1, 2, 35.0))
    tl = rec.timeline(stats, bin_s=5)
    assert tl.offered.tolist() == [20.0, 20.0] and tl.served.tolist() == [20.0, 20.0]
    assert tl.p99_ms[0] == pytest.approx(200.0) and math.isinf(tl.p99_ms[1])
    assert tl.desired.tolist() == [1, 2] and np.isnan(tl.forecast[0]) and tl.forecast[1] == 35
    pytest.importorskip("matplotlib")
    out = tmp_path / "demo.png"
    plot_timelines([tl], 500.0, str(out), "live")
    assert out.stat().st_size > 10_000


def test_progress_line_says_what_the_panel_shows() -> None:
    rec = DemoRecorder()
    s = rec.add(42.0, _status(3, 4, 180.0))
    line = progress_line(45.0, "ramp up", (170.0, 165.5, 12.0, 80.0, 0), s, 2)
    for part in ("t=  45s", "ramp up", "offered  170.0", "served  165.5", "p99    80.0 ms",
                 "ready 3 desired 4", "forecast 180", "failed 2"):  # fmt: skip
        assert part in line, (part, line)
