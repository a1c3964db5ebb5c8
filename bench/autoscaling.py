"""Autoscaling benchmark: hpa vs kpa vs predictive vs oracle in the fleet simulator.

Run: PYTHONPATH=operator python bench/autoscaling.py [--quick] [--jobs 2]

Every policy is built the way the operator builds it, from a spec
(infleet_operator.simulator.scenario.setup_policy -> autoscaling.spec), so a
winning target is a spec field to paste: targetQueueDepthPerReplica (hpa, kpa),
predictive.targetUtilization (predictive).

FROZEN (fixed before any tuning; change only with a note in bench/README.md):
traces, SLO, decision periods, remedies and oracle below. Targets are swept per
policy; the best target is picked on the TUNE shapes and then reported on the
HELD-OUT shapes.
"""

from __future__ import annotations

import argparse
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

# ---- FROZEN ---------------------------------------------------------------------------
TRACE_SECONDS = 3 * 3600  # one diurnal cycle compressed into 3 h (ramps 8x a real day's)
MEAN_RATE = 100.0  # req/s
TUNE_SHAPES = ("diurnal", "bursty")
HELDOUT_SHAPES = ("flash", "step", "mixed")  # mixed: slow growth x 2 cycles x flash crowds
SEEDS = (1, 2, 3, 4, 5)
START_DELAYS = (120.0, 30.0)
SLO_S = 0.5  # per-request latency; dropped or timed out = miss
GOAL = 0.99  # SLO attainment the costs are compared at
INTERVAL_S = {"hpa": 15, "kpa": 2, "predictive": 15, "oracle": 15}  # each one's default period
TARGETS = {  # the sweep: each policy's own knob
    "hpa": (1.5, 2.0, 3.0, 4.0, 6.0, 8.0),  # targetQueueDepthPerReplica (queue + in-flight)
    "kpa": (1.0, 1.5, 2.0, 3.0, 4.0, 6.0),  # targetQueueDepthPerReplica (concurrency)
    "predictive": (0.3, 0.4, 0.5, 0.6, 0.7, 0.8),  # predictive.targetUtilization
    "oracle": (0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
}
# Oracle: infleet_operator.autoscaling.oracle: sees the true intensity, provisions
# ceil(max rate over [t, t + start delay x 1.2 + 2 periods] / (saturated throughput x u)).
# Remedies for shapes where no causal policy reaches GOAL, each on its own, on predictive:
REMEDIES: dict[str, dict[str, Any]] = {
    "headroom": {"predictive": {"burstQuantile": 0.99, "maxBurstHeadroom": 3.0}},
    "adaptive": {"overload": {"adaptiveBatching": {
        "enabled": True, "maxBatchSize": 32, "maxQueueDelayMicroseconds": 20_000}}},
    "shedding": {"overload": {"shedding": {"enabled": True, "queueDepthPerReplica": 2}}},
}  # fmt: skip
PRIORITY_MIX = (0.3, 0.7)  # shedding runs: 30% of requests at level 1, 70% at level 2
# ---------------------------------------------------------------------------------------
POLICIES = tuple(TARGETS)
CAUSAL = ("hpa", "kpa", "predictive")


@dataclass(frozen=True)
class Job:
    policy: str
    shape: str
    delay: float
    seed: int
    target: float
    seconds: int
    remedy: str = ""


def run_job(job: Job) -> tuple[Job, float, float, float]:
    """(job, attainment, replica-seconds, attainment of priority level 1)."""
    from infleet_operator.simulator.fleet import simulate
    from infleet_operator.simulator.fleet_config import FleetConfig
    from infleet_operator.simulator.report import per_priority, summarize
    from infleet_operator.simulator.scenario import setup_policy
    from infleet_operator.simulator.traces import synthetic

    trace = synthetic(job.shape, job.seconds, MEAN_RATE, job.seed)
    shares = PRIORITY_MIX if job.remedy == "shedding" else ()
    fleet = FleetConfig(start_delay_s=job.delay, seed=job.seed, priority_shares=shares)
    extra = REMEDIES.get(job.remedy)
    loop, fleet = setup_policy(
        job.policy, trace, fleet, job.target, 1, 200, INTERVAL_S[job.policy], extra
    )
    result = simulate(trace, loop, fleet)
    s = summarize(job.policy, result, SLO_S)
    levels = per_priority(result, SLO_S)
    return job, s.slo_attainment, s.replica_seconds, levels[0][2] if levels else s.slo_attainment


Curve = list[tuple[float, float]]  # (mean cost, mean attainment) per target


def cost_at_goal(points: Curve) -> float:
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


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="2 seeds, 120 s delay, 1 h traces")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--seeds", type=int, default=len(SEEDS), help="use the first N seeds")
    ap.add_argument("--delays", default=None, help="subset of start delays, e.g. 30")
    ap.add_argument("--shapes", default=None, help="subset of shapes, e.g. flash,mixed")
    ap.add_argument("--hours", type=float, default=None, help="trace length (default 3)")
    args = ap.parse_args(argv)
    seeds, delays, seconds = SEEDS[: args.seeds], START_DELAYS, TRACE_SECONDS
    if args.quick:
        seeds, delays, seconds = SEEDS[:2], (120.0,), 3600
    if args.delays:
        delays = tuple(float(x) for x in args.delays.split(","))
    if args.hours:
        seconds = int(args.hours * 3600)
    shapes = tuple(args.shapes.split(",")) if args.shapes else TUNE_SHAPES + HELDOUT_SHAPES
    print(
        f"{len(shapes)} shapes x {len(delays)} delays x {len(seeds)} seeds"
        f" ({seconds / 3600:g} h traces, {MEAN_RATE:.0f} req/s mean, SLO {SLO_S * 1000:.0f} ms,"
        f" goal {GOAL:.0%}) on {args.jobs} processes",
        flush=True,
    )
    started = time.perf_counter()
    with ProcessPoolExecutor(args.jobs) as pool:
        for d in delays:
            runs = Runs(pool, seeds, seconds, d)
            runs.add([Job(p, sh, d, s, t, seconds) for p in POLICIES for sh in shapes
                      for s in seeds for t in TARGETS[p]])  # fmt: skip
            print(f"\n=== start delay {d:.0f} s ({time.perf_counter() - started:.0f}s) ===")
            for shape in shapes:
                report_shape(runs, shape)
            report_heldout(runs, [s for s in shapes if s in HELDOUT_SHAPES])
            sys.stdout.flush()
    print(f"\nwall time {time.perf_counter() - started:.0f}s")
    return 0


class Runs:
    """Results by (policy, shape, target, remedy), averaged over seeds."""

    def __init__(self, pool: ProcessPoolExecutor, seeds: tuple[int, ...], seconds: int,
                 delay: float) -> None:  # fmt: skip
        self.pool, self.seeds, self.seconds, self.delay = pool, seeds, seconds, delay
        self.acc: dict[tuple[str, str, float, str], list[tuple[float, float, float]]] = {}

    def add(self, jobs: list[Job]) -> None:
        for job, att, cost, top in self.pool.map(run_job, jobs, chunksize=2):
            key = (job.policy, job.shape, job.target, job.remedy)
            self.acc.setdefault(key, []).append((att, cost, top))

    def curve(self, p: str, shapes: tuple[str, ...], remedy: str = "", top: bool = False) -> Curve:
        out = []
        for t in TARGETS[p]:
            rows = [x for sh in shapes for x in self.acc[(p, sh, t, remedy)]]
            att = [r[2] if top else r[0] for r in rows]
            out.append((sum(r[1] for r in rows) / len(rows), sum(att) / len(att)))
        return out

    def remedy(self, shape: str, remedy: str) -> None:
        jobs = [Job("predictive", shape, self.delay, s, t, self.seconds, remedy)
                for s in self.seeds for t in TARGETS["predictive"]]  # fmt: skip
        self.add(jobs)


def report_shape(runs: Runs, shape: str) -> None:
    curves = {p: runs.curve(p, (shape,)) for p in POLICIES}
    costs = {p: cost_at_goal(c) for p, c in curves.items()}
    print(f"\n{shape}: replica-seconds for {GOAL:.0%} attainment (best target per policy)")
    print(f"  {'policy':<11} {'cost@99%':>10} {'vs oracle':>9} {'best att.':>9} {'at cost':>9}")
    for p in POLICIES:
        best_cost, best_att = max(curves[p], key=lambda x: (x[1], -x[0]))
        print(f"  {p:<11} {_f(costs[p]):>10} {_r(costs[p], costs['oracle']):>9}"
              f" {best_att:>9.2%} {best_cost:>9.0f}")  # fmt: skip
    reactive = min(costs["hpa"], costs["kpa"])
    if any(costs[p] != float("inf") for p in CAUSAL):
        if costs["predictive"] != float("inf") and reactive != float("inf"):
            saving = 1 - costs["predictive"] / reactive
            print(f"  predictive vs best reactive: {saving:+.0%} cheaper (target >= 30%)")
        return
    print("  no causal policy reaches the goal; predictive with each remedy on its own:")
    for name in REMEDIES:
        runs.remedy(shape, name)
        top = name == "shedding"
        c = runs.curve("predictive", (shape,), name, top=top)
        best_cost, best_att = max(c, key=lambda x: (x[1], -x[0]))
        what = "level-1 att." if top else "att."
        overall = runs.curve("predictive", (shape,), name) if top else c
        extra = f", overall {max(a for _, a in overall):.2%}" if top else ""
        print(f"    {name:<9} cost@99% {_f(cost_at_goal(c)):>8}  best {what} {best_att:.2%}"
              f" at {best_cost:.0f}{extra}")  # fmt: skip


def report_heldout(runs: Runs, heldout: list[str]) -> None:
    tune = [s for s in TUNE_SHAPES if any(k[1] == s for k in runs.acc)]
    if not heldout or not tune:
        return
    print(f"\nheld-out check: target picked on {'+'.join(tune)}, applied to {'+'.join(heldout)}")
    print(f"  {'policy':<11} {'target':>7} {'held-out att.':>13} {'held-out cost':>13}")
    for p in POLICIES:
        curve = runs.curve(p, tuple(tune))
        ok = [(c, t) for (c, a), t in zip(curve, TARGETS[p], strict=True) if a >= GOAL]
        t = min(ok)[1] if ok else TARGETS[p][0]
        c, a = runs.curve(p, tuple(heldout))[TARGETS[p].index(t)]
        print(f"  {p:<11} {t:>7g} {a:>13.2%} {c:>13.0f}")


def _f(x: float) -> str:
    return "never" if x == float("inf") else f"{x:.0f}"


def _r(a: float, b: float) -> str:
    return "-" if float("inf") in (a, b) or b == 0 else f"{a / b:.2f}"


if __name__ == "__main__":
    sys.exit(main())
