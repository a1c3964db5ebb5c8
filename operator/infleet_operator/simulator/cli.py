"""`infleet simulate`: replay a trace through autoscaling policies and compare them."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from infleet_operator.autoscaling import POLICY_NAMES


def add_simulate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``simulate`` on an argparse subparsers object; returns the parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="replay a trace through autoscaling policies (discrete-event fleet simulator)",
        description=__doc__,
    )
    configure_parser(p)
    p.set_defaults(func=run_simulate)
    return p


def configure_parser(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("--trace", default="diurnal", help="diurnal|bursty|flash|step or a CSV path")
    a("--duration", type=float, default=86400.0, help="seconds (default one day)")
    a("--rate", type=float, default=120.0, help="mean req/s of a synthetic trace")
    a("--seed", type=int, default=0)
    a("--policy", default="all", choices=(*POLICY_NAMES, "all"))
    a(
        "--target",
        type=float,
        default=None,
        help="policy target: queue/replica (hpa), concurrency/replica (kpa), utilisation"
        " (predictive, oracle)",
    )
    a("--min", dest="min_replicas", type=int, default=1)
    a("--max", dest="max_replicas", type=int, default=100)
    a("--start-delay", type=float, default=120.0, help="pod start-to-Ready seconds")
    a("--slo-ms", type=float, default=500.0)
    a("--lb", default="least-queue", choices=("least-queue", "round-robin"))
    a("--max-batch", type=int, default=16)
    a("--max-queue-delay-ms", type=float, default=5.0)
    a("--service-table", default=None, help="JSON/CSV of batch size -> seconds (bench figures)")
    a("--tick", type=float, default=2.0, help="autoscaler tick seconds")
    a("--scrape", type=float, default=5.0, help="metric scrape interval seconds")
    a("--metric-lag", type=float, default=2.0)
    a("--plot", default=None, metavar="OUT.png")
    a("--json", action="store_true", help="machine-readable output on stdout")


def run_simulate(args: argparse.Namespace) -> int:
    from infleet_operator.simulator.fleet import FleetConfig, simulate
    from infleet_operator.simulator.report import format_table, plot, summarize
    from infleet_operator.simulator.scenario import policy_for
    from infleet_operator.simulator.service import DEFAULT_TABLE, load_table
    from infleet_operator.simulator.traces import make_trace

    def say(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr, flush=True)

    try:
        trace = make_trace(args.trace, args.duration, args.rate, args.seed)
        table = load_table(args.service_table) if args.service_table else DEFAULT_TABLE
    except (OSError, ValueError) as exc:
        print(f"infleet simulate: {exc}", file=sys.stderr)
        return 2
    fleet = FleetConfig(
        service_table=table,
        max_batch=args.max_batch,
        max_queue_delay_s=args.max_queue_delay_ms / 1000,
        lb=args.lb,
        start_delay_s=args.start_delay,
        scrape_interval_s=args.scrape,
        metric_lag_s=args.metric_lag,
        tick_s=args.tick,
        seed=args.seed,
    )
    say(
        f"trace {trace.name}: {len(trace.arrivals):,} requests over {trace.duration:,.0f}s"
        f" ({trace.mean_rate:.1f} req/s mean)"
    )
    names = POLICY_NAMES if args.policy == "all" else (args.policy,)
    results, rows = {}, []
    for name in names:
        policy = policy_for(
            name,
            trace,
            fleet,
            None if args.policy == "all" else args.target,
            args.min_replicas,
            args.max_replicas,
        )
        started = time.perf_counter()

        def tell(share: float, n: str = name) -> None:
            say(f"  {n}: {share:.0%}")

        result = simulate(trace, policy, fleet, progress=tell)
        say(f"{name}: simulated in {time.perf_counter() - started:.1f}s")
        results[name] = result
        rows.append(summarize(name, result, args.slo_ms / 1000))
    if args.plot:
        plot(results, args.slo_ms / 1000, args.plot)
        say(f"plot written to {args.plot}")
    if args.json:
        json.dump(
            {"trace": trace.name, "slo_ms": args.slo_ms, "results": [r.as_dict() for r in rows]},
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(f"SLO {args.slo_ms:.0f} ms, start delay {args.start_delay:.0f}s, lb {args.lb}")
        print(format_table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infleet_operator.simulator")
    configure_parser(parser)
    return run_simulate(parser.parse_args(argv))
