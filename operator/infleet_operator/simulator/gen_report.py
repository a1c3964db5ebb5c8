"""What a generative run adds to the report: tokens/s, TTFT and ITL percentiles.

A generative run's request latency (the SLO, p50..p99 of the common table) is the
time to first token; the full answer's time is in ``e2e``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class GenStats:
    tokens: int  # generated
    tokens_per_second: float  # generated / (last token - first arrival)
    ttft_ms: tuple[float, float, float]  # p50, p95, p99 (inf: some never got a token)
    itl_ms: tuple[float, float, float]
    e2e_ms: tuple[float, float, float]  # arrival to last token, finished requests

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def _pct(values: np.ndarray) -> tuple[float, float, float]:
    if not len(values):
        return (np.nan, np.nan, np.nan)
    q = np.percentile(values, [50, 95, 99], method="higher") * 1000
    return (float(q[0]), float(q[1]), float(q[2]))


def weighted_pct(pairs: list[tuple[float, int]]) -> tuple[float, float, float]:
    """Percentiles of values given as (value, count) pairs."""
    if not pairs:
        return (np.nan, np.nan, np.nan)
    arr = np.asarray(pairs, dtype=np.float64)
    order = np.argsort(arr[:, 0], kind="stable")
    values, counts = arr[order, 0], arr[order, 1]
    cum = np.cumsum(counts)
    out = []
    for q in (0.50, 0.95, 0.99):
        i = int(np.searchsorted(cum, q * cum[-1], side="left"))
        out.append(float(values[min(i, len(values) - 1)]) * 1000)
    return (out[0], out[1], out[2])


def gen_stats(
    arrival: np.ndarray,
    first_token: np.ndarray,
    finish: np.ndarray,
    itl: list[tuple[float, int]],
    tokens: int,
) -> GenStats:
    ttft = first_token - arrival
    ttft = np.where(np.isnan(ttft), np.inf, ttft)
    done = ~np.isnan(finish)
    last = float(np.nanmax(finish)) if done.any() else 0.0
    span = last - float(arrival[0]) if len(arrival) else 0.0
    return GenStats(
        tokens=tokens,
        tokens_per_second=tokens / span if span > 0 else 0.0,
        ttft_ms=_pct(ttft),
        itl_ms=weighted_pct(itl),
        e2e_ms=_pct((finish - arrival)[done]),
    )


def format_gen(g: GenStats) -> str:
    def row(name: str, v: tuple[float, float, float]) -> str:
        cells = " ".join(f"{x:>8.1f}" if np.isfinite(x) else f"{'dropped':>8}" for x in v)
        return f"  {name:<22} {cells}"

    return "\n".join(
        [
            f"generation: {g.tokens:,} tokens, {g.tokens_per_second:,.1f} tokens/s"
            " (first arrival to last token)",
            f"  {'':<22} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8}",
            row("time to first token", g.ttft_ms),
            row("inter-token latency", g.itl_ms),
            row("full answer", g.e2e_ms),
        ]
    )
