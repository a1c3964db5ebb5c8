"""Summaries of a simulation: SLO attainment, percentiles, cost; table and PNG plot."""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from infleet_operator.simulator.fleet import SimResult


@dataclass(frozen=True)
class Summary:
    policy: str
    requests: int
    slo_attainment: float  # share under the SLO; dropped count as misses
    p50_ms: float
    p95_ms: float
    p99_ms: float
    dropped: int
    replica_seconds: float
    mean_replicas: float
    scale_actions: int
    limited_ticks: int  # ticks where min/max bounds cut the recommendation

    def as_dict(self) -> dict[str, float | int | str]:
        return asdict(self)


def summarize(policy: str, result: SimResult, slo_s: float) -> Summary:
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
        replica_seconds=result.replica_seconds,
        mean_replicas=result.replica_seconds / result.duration if result.duration else 0.0,
        scale_actions=result.scale_actions,
        limited_ticks=result.limited_ticks,
    )


def format_table(rows: list[Summary]) -> str:
    head = (
        f"{'policy':<11} {'SLO att.':>9} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>9}"
        f" {'dropped':>8} {'replica-s':>10} {'mean rep':>8} {'actions':>7}"
    )
    lines = [head, "-" * len(head)]
    for s in rows:
        lines.append(
            f"{s.policy:<11} {s.slo_attainment:>9.2%} {s.p50_ms:>8.0f} {s.p95_ms:>8.0f}"
            f" {_ms(s.p99_ms):>9} {s.dropped:>8d} {s.replica_seconds:>10.0f}"
            f" {s.mean_replicas:>8.1f} {s.scale_actions:>7d}"
        )
    return "\n".join(lines)


def _ms(v: float) -> str:
    return "dropped" if not np.isfinite(v) else f"{v:.0f}"


def latency_p99_by_bin(result: SimResult, bin_s: float) -> tuple[np.ndarray, np.ndarray]:
    """p99 latency (s; inf = a drop) of the requests arriving in each bin."""
    lat = np.where(np.isnan(result.latency), np.inf, result.latency)
    bins = (result.arrivals // bin_s).astype(np.int64)
    nbins = int(result.duration // bin_s) + 1
    order = np.lexsort((lat, bins))
    counts = np.bincount(bins, minlength=nbins)
    starts = np.cumsum(counts) - counts
    p99 = np.full(nbins, np.nan)
    has = counts > 0
    pick = starts[has] + np.floor(0.99 * (counts[has] - 1)).astype(np.int64)
    p99[has] = lat[order][pick]
    return np.arange(nbins) * bin_s, p99


def plot(results: dict[str, SimResult], slo_s: float, path: str) -> None:
    """Load, replicas and p99 latency over time, one line per policy (matplotlib Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(3, 1, figsize=(12, 9), sharex=True)
    first = next(iter(results.values()))
    hours = 3600.0
    bin_s = max(10.0, first.duration / 600)
    counts = np.bincount((first.arrivals // bin_s).astype(np.int64))
    axes[0].plot(np.arange(len(counts)) * bin_s / hours, counts / bin_s, color="black", lw=0.8)
    axes[0].set_ylabel("arrivals (req/s)")
    for name, r in results.items():
        t = r.ticks[:, 0] / hours
        (line,) = axes[1].step(t, r.ticks[:, 2], where="post", lw=1.0, label=f"{name} asked")
        axes[1].step(t, r.ticks[:, 3], where="post", lw=0.6, ls=":", color=line.get_color())
        x, p99 = latency_p99_by_bin(r, bin_s)
        axes[2].plot(x / hours, np.minimum(p99, 10 * slo_s) * 1000, lw=0.8, label=name)
    axes[1].set_ylabel("replicas (dotted: ready)")
    axes[1].legend(loc="upper left", fontsize=8)
    axes[2].axhline(slo_s * 1000, color="red", ls="--", lw=0.8, label="SLO")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("p99 latency (ms, capped)")
    axes[2].set_xlabel("hours")
    axes[2].legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
