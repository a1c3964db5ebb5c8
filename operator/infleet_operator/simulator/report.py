"""Summaries of a simulation: SLO attainment, percentiles, cost (replica-seconds, GPU-hours)."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from infleet_operator.simulator.result import SimResult


@dataclass(frozen=True)
class Summary:
    policy: str
    requests: int
    slo_attainment: float  # share under the SLO; dropped count as misses
    p50_ms: float
    p95_ms: float
    p99_ms: float
    dropped: int  # timed out, refused or never served
    refused: int  # of which refused by priority shedding
    replica_seconds: float
    gpu_hours: float  # replica-seconds x GPUs per pod / 3600
    mean_replicas: float
    scale_actions: int
    limited_ticks: int  # ticks where min/max bounds cut the recommendation

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def summarize(policy: str, result: SimResult, slo_s: float, gpus_per_pod: int = 1) -> Summary:
    lat = np.where(np.isnan(result.latency), np.inf, result.latency)
    n = len(lat)
    q = np.percentile(lat, [50, 95, 99], method="higher") * 1000 if n else np.zeros(3)
    return Summary(
        policy=policy,
        requests=n,
        slo_attainment=float((lat <= slo_s).mean()) if n else 1.0,
        p50_ms=float(q[0]),
        p95_ms=float(q[1]),
        p99_ms=float(q[2]),
        dropped=result.dropped,
        refused=int(result.refused.sum()) if result.refused is not None else 0,
        replica_seconds=result.replica_seconds,
        gpu_hours=result.replica_seconds * gpus_per_pod / 3600.0,
        mean_replicas=result.replica_seconds / result.duration if result.duration else 0.0,
        scale_actions=result.scale_actions,
        limited_ticks=result.limited_ticks,
    )


def format_table(rows: list[Summary]) -> str:
    head = (
        f"{'policy':<11} {'SLO att.':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>9}"
        f" {'dropped':>8} {'replica-s':>10} {'GPU-h':>8} {'mean rep':>8} {'actions':>7}"
    )
    lines = [head, "-" * len(head)]
    for s in rows:
        lines.append(
            f"{s.policy:<11} {s.slo_attainment:>9.2%} {_ms(s.p50_ms):>8} {_ms(s.p95_ms):>8}"
            f" {_ms(s.p99_ms):>9} {s.dropped:>8d} {s.replica_seconds:>10.0f} {s.gpu_hours:>8.2f}"
            f" {s.mean_replicas:>8.1f} {s.scale_actions:>7d}"
        )
    return "\n".join(lines)


def _ms(v: float) -> str:
    return "dropped" if not np.isfinite(v) else f"{v:.0f}"


def per_priority(result: SimResult, slo_s: float) -> list[tuple[int, int, float, int]]:
    """(level, requests, SLO attainment, refused) per priority level; [] without levels."""
    if result.priority is None:
        return []
    lat = np.where(np.isnan(result.latency), np.inf, result.latency)
    rows = []
    for level in np.unique(result.priority):
        sel = result.priority == level
        refused = int(result.refused[sel].sum()) if result.refused is not None else 0
        rows.append((int(level), int(sel.sum()), float((lat[sel] <= slo_s).mean()), refused))
    return rows


def format_priorities(rows: list[tuple[int, int, float, int]]) -> str:
    lines = ["per priority (1 = highest):"]
    for level, n, att, refused in rows:
        lines.append(f"  level {level}: {n:>9,} requests  SLO att. {att:7.2%}  refused {refused:,}")
    return "\n".join(lines)
