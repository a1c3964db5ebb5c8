"""A trace from a real Prometheus: the range of ``infleet_request_arrivals_total``.

``sum(rate(infleet_request_arrivals_total{SELECTOR}[WINDOW]))`` over the last
``--since`` at a step that keeps the reply under Prometheus' 11,000 points,
expanded to a per-second rate and drawn as Poisson arrivals.
"""

from __future__ import annotations

import json
import math
import re
import time
import urllib.parse
import urllib.request
from typing import Any

import numpy as np

from infleet_operator.simulator.traces import Trace, from_values

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
MAX_POINTS = 10_000


def parse_duration(text: str) -> float:
    """``90s``, ``15m``, ``6h``, ``7d``, ``2w`` -> seconds."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", text)
    if not m:
        raise ValueError(f"{text!r}: expected a duration such as 6h or 7d")
    return float(m.group(1)) * _UNITS[m.group(2)]


def range_query(since_s: float, selector: str = "") -> tuple[str, float]:
    """The PromQL and the step (seconds) for a window of ``since_s``."""
    step = max(15.0, math.ceil(since_s / MAX_POINTS / 15.0) * 15.0)
    window = f"{int(max(step, 60.0))}s"
    return f"sum(rate(infleet_request_arrivals_total{{{selector}}}[{window}]))", step


def per_second_rate(reply: dict[str, Any], step: float) -> np.ndarray:
    """A query_range reply (one series) -> req/s for every second of the range."""
    if reply.get("status") != "success":
        raise ValueError(f"prometheus error: {reply.get('error', reply)}")
    result = reply["data"]["result"]
    if not result:
        raise ValueError("prometheus has no infleet_request_arrivals_total in that range")
    values = result[0]["values"]
    t = np.array([float(v[0]) for v in values])
    r = np.array([float(v[1]) for v in values])
    r[~np.isfinite(r)] = 0.0
    seconds = np.arange(t[0], t[-1] + step, 1.0)
    return np.interp(seconds, t, r)


def load_prometheus(url: str, since: str, selector: str = "", timeout_s: float = 60.0) -> Trace:
    since_s = parse_duration(since)
    query, step = range_query(since_s, selector)
    end = time.time()
    params = urllib.parse.urlencode(
        {"query": query, "start": end - since_s, "end": end, "step": step}
    )
    with urllib.request.urlopen(
        f"{url.rstrip('/')}/api/v1/query_range?{params}", timeout=timeout_s
    ) as r:
        reply = json.load(r)
    rate = per_second_rate(reply, step)
    return from_values(rate, "rate", None, f"prometheus {since}")
