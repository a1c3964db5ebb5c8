"""One picture of an autoscaled run, simulated or live.

Offered vs served load and the forecast, replicas ready/desired, and p99
latency over time. ``infleet simulate --plot`` and ``make demo`` draw the same
:class:`Timeline` with :func:`plot_timelines`, so a live run and its
simulation can be laid side by side.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from infleet_operator.simulator.result import SimResult


@dataclass(frozen=True)
class Timeline:
    label: str
    bin_t: np.ndarray  # seconds: start of each traffic bin
    offered: np.ndarray  # req/s arriving in the bin
    served: np.ndarray  # req/s answered in the bin
    p99_ms: np.ndarray  # p99 latency of the bin's requests (inf: some were dropped), nan: none
    tick_t: np.ndarray  # seconds: autoscaler decisions
    ready: np.ndarray
    desired: np.ndarray
    forecast: np.ndarray  # req/s the policy planned for (nan: none)


def p99_by_bin(arrivals: np.ndarray, latency_s: np.ndarray, bin_s: float, nbins: int) -> np.ndarray:
    """p99 latency (ms; inf = a drop, nan = no request) of the requests arriving in each bin."""
    lat = np.where(np.isnan(latency_s), np.inf, latency_s)
    bins = np.minimum((arrivals // bin_s).astype(np.int64), nbins - 1)
    order = np.lexsort((lat, bins))
    counts = np.bincount(bins, minlength=nbins)
    starts = np.cumsum(counts) - counts
    p99 = np.full(nbins, np.nan)
    has = counts > 0
    pick = starts[has] + np.floor(0.99 * (counts[has] - 1)).astype(np.int64)
    p99[has] = lat[order][pick] * 1000.0
    return p99


def timeline_of(label: str, r: SimResult, bin_s: float | None = None) -> Timeline:
    bin_s = bin_s or max(5.0, r.duration / 600)
    nbins = max(1, int(r.duration // bin_s))  # whole bins only: a partial one reads low
    offered = np.bincount(
        np.minimum((r.arrivals // bin_s).astype(np.int64), nbins - 1), minlength=nbins
    )
    ok = ~np.isnan(r.latency)
    finish = ((r.arrivals[ok] + r.latency[ok]) // bin_s).astype(np.int64)
    served = np.bincount(np.minimum(finish, nbins - 1), minlength=nbins)[:nbins]
    t = r.ticks
    return Timeline(
        label=label,
        bin_t=np.arange(nbins) * bin_s,
        offered=offered / bin_s,
        served=served / bin_s,
        p99_ms=p99_by_bin(r.arrivals, r.latency, bin_s, nbins),
        tick_t=t[:, 0],
        ready=t[:, 3],
        desired=t[:, 4],
        forecast=t[:, 5],
    )


def plot_timelines(timelines: list[Timeline], slo_ms: float, path: str, title: str = "") -> None:
    """Write the three-panel PNG (matplotlib, Agg backend)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    span = max(float(tl.bin_t[-1]) if len(tl.bin_t) else 0.0 for tl in timelines)
    scale, unit = (3600.0, "hours") if span > 7200 else (1.0, "seconds")
    fig, axes = plt.subplots(3, 1, figsize=(11, 8.5), sharex=True)
    first = timelines[0]
    axes[0].plot(first.bin_t / scale, first.offered, color="black", lw=0.9, label="offered")
    for tl in timelines:
        name = f"{tl.label}: " if len(timelines) > 1 else ""
        (line,) = axes[0].plot(tl.bin_t / scale, tl.served, lw=0.8, label=f"{name}served")
        color = line.get_color()
        if np.isfinite(tl.forecast).any():
            axes[0].plot(
                tl.tick_t / scale,
                tl.forecast,
                lw=0.8,
                ls="--",
                color=color,
                label=f"{name}forecast",
            )
        axes[1].step(
            tl.tick_t / scale, tl.desired, where="post", lw=1.1, color=color, label=f"{name}desired"
        )
        axes[1].step(
            tl.tick_t / scale,
            tl.ready,
            where="post",
            lw=0.8,
            ls=":",
            color=color,
            label=f"{name}ready",
        )
        capped = np.minimum(tl.p99_ms, 20 * slo_ms)
        axes[2].plot(tl.bin_t / scale, capped, lw=0.8, color=color, label=f"{tl.label} p99")
    axes[0].set_ylabel("req/s")
    axes[0].legend(loc="upper left", fontsize=8, ncol=2)
    axes[1].set_ylabel("replicas")
    axes[1].legend(loc="upper left", fontsize=8, ncol=2)
    axes[2].axhline(slo_ms, color="red", ls="--", lw=0.8, label="SLO")
    axes[2].set_yscale("log")
    axes[2].set_ylabel("p99 latency (ms, capped)")
    axes[2].set_xlabel(unit)
    axes[2].legend(loc="upper left", fontsize=8)
    if title:
        axes[0].set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
