"""Request traces: synthetic shapes (seeded) and CSV files.

A trace is the sorted arrival times plus the expected rate per second (the
intensity the arrivals were drawn from; for a file, the counts smoothed). The
oracle reads the rate, the simulator replays the arrivals.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

SHAPES = ("diurnal", "bursty", "flash", "step", "mixed")


@dataclass(frozen=True)
class Trace:
    name: str
    arrivals: np.ndarray  # float64 seconds, sorted
    rate: np.ndarray  # expected req/s for each second [0, duration)
    duration: float
    # Generation, per request (a timestamp CSV's prompt_tokens / output_tokens columns);
    # None: the simulator takes the fleet spec's defaults.
    prompt_tokens: np.ndarray | None = None
    output_tokens: np.ndarray | None = None

    @property
    def mean_rate(self) -> float:
        return len(self.arrivals) / self.duration if self.duration else 0.0


def poisson_arrivals(rate: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Piecewise-constant Poisson process: Poisson counts per second, uniform inside."""
    counts = rng.poisson(np.maximum(rate, 0.0))
    seconds = np.repeat(np.arange(len(rate), dtype=np.float64), counts)
    offsets = rng.random(len(seconds))
    # Sort offsets inside each second only: cheaper than a global sort.
    order = np.lexsort((offsets, seconds))
    return seconds[order] + offsets[order]


def diurnal_rate(duration: int, mean: float, rng: np.random.Generator) -> np.ndarray:
    """Sinusoid over one period (= duration), trough at t=0, +-60%, with slow noise."""
    t = np.arange(duration, dtype=np.float64)
    base = mean * (1.0 - 0.6 * np.cos(2 * np.pi * t / duration))
    return base * _slow_noise(duration, 0.05, 300.0, rng)


def bursty_rate(duration: int, mean: float, rng: np.random.Generator) -> np.ndarray:
    """Diurnal base times Gamma-sized bursts (Poisson onsets, Gamma lengths)."""
    rate = diurnal_rate(duration, mean * 0.8, rng)
    t = np.arange(duration, dtype=np.float64)
    onset = 0.0
    while True:
        onset += rng.exponential(900.0)
        if onset >= duration:
            break
        length = rng.gamma(2.0, 90.0)
        height = rng.gamma(2.0, 0.5)  # mean +100%
        rise = np.clip((t - onset) / 20.0, 0.0, 1.0)
        fall = np.clip(1.0 - (t - onset - length) / 60.0, 0.0, 1.0)
        rate *= 1.0 + height * np.minimum(rise, fall)
    return rate * _slow_noise(duration, 0.1, 60.0, rng)


def flash_rate(duration: int, mean: float, rng: np.random.Generator) -> np.ndarray:
    """Flat-ish base with a few flash crowds: x3-x5 within 15 s, decaying over ~5 min."""
    rate = np.full(duration, mean * 0.75) * _slow_noise(duration, 0.05, 300.0, rng)
    t = np.arange(duration, dtype=np.float64)
    n = max(1, int(duration // 7200))
    for onset in np.sort(rng.uniform(0.05, 0.9, n)) * duration:
        height = rng.uniform(2.0, 4.0)
        shape = np.where(t < onset, 0.0, np.minimum((t - onset) / 15.0, 1.0))
        shape *= np.exp(-np.clip(t - onset - 60.0, 0.0, None) / 300.0)
        rate *= 1.0 + height * shape
    return rate


def step_rate(duration: int, mean: float, rng: np.random.Generator) -> np.ndarray:
    """Levels between 0.4x and 1.8x of the mean, changing abruptly every 30-120 min."""
    rate = np.empty(duration)
    start = 0
    while start < duration:
        length = int(rng.uniform(1800, 7200))
        rate[start : start + length] = mean * rng.uniform(0.4, 1.8)
        start += length
    return rate


def mixed_rate(duration: int, mean: float, rng: np.random.Generator) -> np.ndarray:
    """Slow growth (+50% over the trace) x two daily cycles x flash crowds (x2-x4 in 20 s)."""
    t = np.arange(duration, dtype=np.float64)
    growth = 0.8 + 0.5 * t / max(duration, 1)
    cycles = 1.0 - 0.5 * np.cos(4 * np.pi * t / max(duration, 1))
    rate = mean * growth * cycles * _slow_noise(duration, 0.05, 300.0, rng)
    n = max(1, int(duration // 5400))
    for onset in np.sort(rng.uniform(0.05, 0.95, n)) * duration:
        height = rng.uniform(1.0, 3.0)
        shape = np.where(t < onset, 0.0, np.minimum((t - onset) / 20.0, 1.0))
        shape *= np.exp(-np.clip(t - onset - 120.0, 0.0, None) / 240.0)
        rate *= 1.0 + height * shape
    return rate


def _slow_noise(duration: int, cv: float, period_s: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative noise, piecewise linear between knots ``period_s`` apart."""
    knots = rng.gamma(1.0 / cv**2, cv**2, int(duration // period_s) + 2)
    return np.interp(np.arange(duration) / period_s, np.arange(len(knots)), knots)


_GENERATORS = {
    "diurnal": diurnal_rate,
    "bursty": bursty_rate,
    "flash": flash_rate,
    "step": step_rate,
    "mixed": mixed_rate,
}


def synthetic(shape: str, duration: float, mean_rate: float, seed: int) -> Trace:
    if shape not in _GENERATORS:
        raise ValueError(f"unknown trace shape {shape!r}; choose {', '.join(SHAPES)} or a CSV")
    rng = np.random.default_rng(seed)
    n = int(duration)
    rate = _GENERATORS[shape](n, mean_rate, rng)
    return Trace(shape, poisson_arrivals(rate, rng), rate, float(n))


def load_csv(path: str | Path, duration: float | None = None) -> Trace:
    """Read a CSV trace.

    Header ``timestamp`` (one row per request, seconds) or ``count`` (requests in
    each second, one row per second; ``rate`` is read the same way). A file with
    no header is read as timestamps. With timestamps, a generative fleet's requests
    may carry ``prompt_tokens`` and ``output_tokens`` columns (either or both).
    """
    with open(path, newline="") as fh:
        rows = [r for r in csv.reader(fh) if r and not r[0].startswith("#")]
    if not rows:
        raise ValueError(f"{path}: empty trace")
    header = [h.strip().lower() for h in rows[0]]
    has_header = not _is_number(header[0])
    body = rows[1:] if has_header else rows
    col = 0
    kind = "timestamp"
    for name in ("count", "rate", "timestamp", "time"):
        if has_header and name in header:
            col, kind = header.index(name), name
            break
    values = np.array([float(r[col]) for r in body], dtype=np.float64)
    tokens = {
        name: np.array([int(float(r[header.index(name)])) for r in body], dtype=np.int64)
        for name in ("prompt_tokens", "output_tokens")
        if has_header and name in header and kind in ("timestamp", "time")
    }
    if not tokens:
        return from_values(values, kind, duration, Path(path).name)
    order = np.argsort(values, kind="stable")
    trace = from_values(values[order], kind, duration, Path(path).name)
    kept = {k: v[order][: len(trace.arrivals)] for k, v in tokens.items()}
    if any((v < 1).any() for v in kept.values()):
        raise ValueError(f"{path}: prompt_tokens and output_tokens must be >= 1")
    return replace(
        trace, prompt_tokens=kept.get("prompt_tokens"), output_tokens=kept.get("output_tokens")
    )


def load_counts(counts: np.ndarray, duration: float | None = None, name: str = "counts") -> Trace:
    """A trace from requests per second (spread uniformly inside each second)."""
    return from_values(counts, "count", duration, name)


def from_values(values: np.ndarray, kind: str, duration: float | None, name: str) -> Trace:
    """Per-second ``count`` or ``rate`` values, or request ``timestamp``s, as a trace."""
    rng = np.random.default_rng(0)
    if kind in ("count", "rate"):
        rate = values
        arrivals = poisson_arrivals(rate, rng) if kind == "rate" else _spread_counts(values, rng)
    else:
        arrivals = np.sort(values - values.min()) if len(values) else values
        rate = np.bincount(arrivals.astype(np.int64)).astype(np.float64)
    end = float(duration) if duration else float(max(len(rate), 1))
    arrivals = arrivals[arrivals < end]
    rate = np.pad(rate, (0, max(0, int(end) - len(rate))))[: int(end)]
    smooth = np.convolve(rate, np.ones(5) / 5.0, mode="same")
    return Trace(name, arrivals, smooth, end)


def _spread_counts(counts: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    n = np.rint(counts).astype(np.int64)
    seconds = np.repeat(np.arange(len(n), dtype=np.float64), n)
    offsets = rng.random(len(seconds))
    order = np.lexsort((offsets, seconds))
    return seconds[order] + offsets[order]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def make_trace(spec: str, duration: float | None, mean_rate: float, seed: int) -> Trace:
    """A shape name (``duration`` default one day) or a CSV path (default: the file's length)."""
    if spec in _GENERATORS:
        return synthetic(spec, duration or 86400.0, mean_rate, seed)
    return load_csv(spec, duration)
