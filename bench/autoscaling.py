"""Autoscaling benchmark: hpa vs kpa vs predictive vs oracle in the fleet simulator.

Run: PYTHONPATH=operator python bench/autoscaling.py [--quick] [--jobs 2]

FROZEN (fixed before any tuning; change only with a note in bench/README.md):
traces, SLO and oracle below. Targets are swept per policy; the best target is
picked on the TUNE shapes and then reported on the HELD-OUT shapes.
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

# ---- FROZEN ---------------------------------------------------------------------------
TRACE_SECONDS = 3 * 3600  # one diurnal cycle compressed into 3 h (ramps 8x a real day's)
MEAN_RATE = 100.0  # req/s
TUNE_SHAPES = ("diurnal", "bursty")
HELDOUT_SHAPES = ("flash", "step")
SEEDS = (1, 2, 3, 4, 5)
START_DELAYS = (30.0, 120.0, 600.0)
SLO_S = 0.5  # per-request latency; dropped or timed out = miss
GOAL = 0.99  # SLO attainment the costs are compared at
# Oracle: infleet_operator.autoscaling.oracle: sees the true intensity, provisions
# ceil(max rate over [t, t + start delay x 1.2 + tick + scrape] / (saturated throughput x u)).
TARGETS = {  # the sweep: each policy's own knob
    "hpa": (1.5, 2.0, 3.0, 4.0, 6.0, 8.0),  # queue + in-flight per replica
    "kpa": (1.0, 1.5, 2.0, 3.0, 4.0, 6.0),  # concurrency per replica
    "predictive": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8),  # utilisation of saturated throughput
    "oracle": (0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
}
# ---------------------------------------------------------------------------------------
POLICIES = tuple(TARGETS)


@dataclass(frozen=True)
class Job:
    policy: str
    shape: str
    delay: float
    seed: int
    target: float
    seconds: int


def run_job(job: Job) -> tuple[Job, float, float]:
    from infleet_operator.simulator.fleet import FleetConfig, simulate
    from infleet_operator.simulator.report import summarize
    from infleet_operator.simulator.scenario import setup_policy
    from infleet_operator.simulator.traces import synthetic

    trace = synthetic(job.shape, job.seconds, MEAN_RATE, job.seed)
    fleet = FleetConfig(start_delay_s=job.delay, seed=job.seed)
    loop, fleet = setup_policy(job.policy, trace, fleet, job.target, 1, 200)
    s = summarize(job.policy, simulate(trace, loop, fleet), SLO_S)
    return job, s.slo_attainment, s.replica_seconds


def cost_at_goal(points: list[tuple[float, float]]) -> float:
    """Replica-seconds at GOAL attainment from (cost, attainment) points; inf if never reached.

    Interpolates between the dearest miss and the cheapest hit below it in cost.
    """
    hits = [(c, a) for c, a in points if a >= GOAL]
    if not hits:
        return float("inf")
    c1, a1 = min(hits)
    misses = [(c, a) for c, a in points if a < GOAL and c < c1]
    if not misses:
        return c1
    c0, a0 = max(misses)
    return c0 + (GOAL - a0) / (a1 - a0) * (c1 - c0) if a1 > a0 else c1


def attainment_at(points: list[tuple[float, float]], cost: float) -> float:
    pts = sorted(points)
    if cost <= pts[0][0]:
        return pts[0][1]
    for (c0, a0), (c1, a1) in itertools.pairwise(pts):
        if c0 <= cost <= c1:
            return a0 + (a1 - a0) * (cost - c0) / (c1 - c0) if c1 > c0 else max(a0, a1)
    return pts[-1][1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 120 s delay, 2 h traces")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="use the first N seeds")
    ap.add_argument("--delays", default=None, help="subset of start delays, e.g. 30,600")
    args = ap.parse_args(argv)
    seeds, delays, seconds = SEEDS[: args.seeds], START_DELAYS, TRACE_SECONDS
    if args.quick:
        seeds, delays, seconds = SEEDS[:2], (120.0,), 2 * 3600
    if args.delays:
        delays = tuple(float(x) for x in args.delays.split(","))
    shapes = TUNE_SHAPES + HELDOUT_SHAPES
    n_jobs = len(POLICIES) * len(shapes) * len(delays) * len(seeds) * len(TARGETS["hpa"])
    print(
        f"{n_jobs} simulations ({seconds / 3600:.0f} h traces, {MEAN_RATE:.0f} req/s mean,"
        f" SLO {SLO_S * 1000:.0f} ms, goal {GOAL:.0%}) on {args.jobs} processes",
        flush=True,
    )
    started = time.perf_counter()
    # (policy, shape, delay, target) -> list of (attainment, cost) over seeds
    acc: dict[tuple[str, str, float, float], list[tuple[float, float]]] = {}

    def curve(p: str, shapes_: tuple[str, ...], d: float) -> list[tuple[float, float]]:
        """(mean cost, mean attainment) per target, averaged over seeds and the given shapes."""
        out = []
        for t in TARGETS[p]:
            rows = [x for sh in shapes_ for x in acc[(p, sh, d, t)]]
            out.append((sum(c for _, c in rows) / len(rows), sum(a for a, _ in rows) / len(rows)))
        return out

    with ProcessPoolExecutor(args.jobs) as pool:
        for d in sorted(delays, key=lambda x: x != 120.0):  # the headline delay first
            jobs = [
                Job(p, sh, d, s, t, seconds)
                for p in POLICIES
                for sh in shapes
                for s in seeds
                for t in TARGETS[p]
            ]
            for i, (job, att, cost) in enumerate(pool.map(run_job, jobs, chunksize=2), 1):
                key = (job.policy, job.shape, job.delay, job.target)
                acc.setdefault(key, []).append((att, cost))
                if i % max(1, len(jobs) // 10) == 0:
                    print(
                        f"  delay {d:.0f}s: {i}/{len(jobs)} ({time.perf_counter() - started:.0f}s)",
                        flush=True,
                    )
            print(f"\n=== start delay {d:.0f} s ===")
            for label, group in (("tune", TUNE_SHAPES), ("held-out", HELDOUT_SHAPES)):
                for shape in group:
                    report_shape(shape, label, d, curve)
            report_heldout(d, curve)
            sys.stdout.flush()
    print(f"\nwall time {time.perf_counter() - started:.0f}s")
    return 0


def report_shape(shape: str, label: str, d: float, curve) -> None:  # type: ignore[no-untyped-def]
    costs = {p: cost_at_goal(curve(p, (shape,), d)) for p in POLICIES}
    ref = costs["predictive"]
    print(
        f"\n{shape} ({label}): replica-seconds for {GOAL:.0%} attainment (best target per policy)"
    )
    print(
        f"  {'policy':<11} {'cost@99%':>10} {'vs oracle':>9} {'pred/this':>9} {'att@pred cost':>13}"
    )
    for p in POLICIES:
        c = costs[p]
        att = attainment_at(curve(p, (shape,), d), ref) if ref != float("inf") else float("nan")
        print(f"  {p:<11} {_f(c):>10} {_r(c, costs['oracle']):>9} {_r(ref, c):>9} {att:>13.2%}")


def report_heldout(d: float, curve) -> None:  # type: ignore[no-untyped-def]
    print(
        f"\nheld-out check: target picked on {'+'.join(TUNE_SHAPES)}, applied to"
        f" {'+'.join(HELDOUT_SHAPES)}"
    )
    print(f"  {'policy':<11} {'target':>7} {'held-out att.':>13} {'held-out cost':>13}")
    for p in POLICIES:
        tune = curve(p, TUNE_SHAPES, d)
        ok = [(c, t) for (c, a), t in zip(tune, TARGETS[p], strict=True) if a >= GOAL]
        t = min(ok)[1] if ok else TARGETS[p][0]
        i = TARGETS[p].index(t)
        c, a = curve(p, HELDOUT_SHAPES, d)[i]
        print(f"  {p:<11} {t:>7g} {a:>13.2%} {c:>13.0f}")


def _f(x: float) -> str:
    return "never" if x == float("inf") else f"{x:.0f}"


def _r(a: float, b: float) -> str:
    return "-" if float("inf") in (a, b) or b == 0 else f"{a / b:.2f}"


if __name__ == "__main__":
    sys.exit(main())
