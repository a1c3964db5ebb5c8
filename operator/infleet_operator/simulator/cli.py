"""`infleet simulate`: rehearse autoscaling on a trace before deploying.

With ``-f fleet.yaml`` it replays the trace through exactly what the operator
would run for that manifest (policy, parameters, decision period, bounds,
stabilisation, step limits), on a fleet calibrated by ``--profile``
(``infleet profile``). Without ``-f`` it compares the policies by name.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from typing import Any

from infleet_operator.autoscaling import POLICY_NAMES


def add_simulate_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``simulate`` on an argparse subparsers object; returns the parser."""
    p: argparse.ArgumentParser = subparsers.add_parser(
        "simulate",
        help="replay a trace through the autoscaler a manifest would get (fleet simulator)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    configure_parser(p)
    p.set_defaults(func=run_simulate)
    return p


def configure_parser(p: argparse.ArgumentParser) -> None:
    a = p.add_argument
    a("-f", "--filename", default=None, metavar="FLEET.yaml", help="an InferenceDeployment")
    a("--name", default=None, help="which InferenceDeployment, if the file has several")
    a("--trace", default="diurnal", help="diurnal|bursty|flash|step|mixed or a CSV/log path")
    a(
        "--prometheus",
        default=None,
        metavar="URL",
        help="trace from this Prometheus:"
        " infleet_request_arrivals_total over --since (replaces --trace)",
    )
    a("--since", default="1d", help="with --prometheus: how far back (e.g. 6h, 7d)")
    a("--selector", default="", help='with --prometheus: label matchers, e.g. namespace="prod"')
    a("--duration", type=float, default=None, help="seconds (default: the file's, or one day)")
    a("--rate", type=float, default=120.0, help="mean req/s of a synthetic trace")
    a("--seed", type=int, default=0)
    a("--profile", default=None, help="profile JSON from `infleet profile` (or a service table)")
    a("--start-delay", type=float, default=None, help="pod start-to-Ready s (overrides profile)")
    a(
        "--set",
        dest="sets",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="change a spec field, e.g. autoscaling.targetQueueDepthPerReplica=16",
    )
    a(
        "--sweep",
        default=None,
        metavar="FIELD=V1,V2,..",
        help="one run per value; prints the cost/SLO frontier and the cheapest value meeting --slo",
    )
    a("--slo", default="500ms@99%", help="latency@attainment goal, e.g. 500ms@99%% (default)")
    a("--lb", default="least-queue", choices=("least-queue", "round-robin"))
    a(
        "--priority-mix",
        default=None,
        metavar="S1,S2,..",
        help="share of requests at priority"
        " level 1 (highest), 2, ..., e.g. 0.3,0.7; reported per level",
    )
    gen = "generative fleets, requests the trace does not size:"
    a("--prompt-tokens", type=int, default=None, help=f"{gen} prompt tokens (128)")
    a("--output-tokens", type=int, default=None, help=f"{gen} output tokens (maxTokens, 128)")
    a("--plot", default=None, metavar="OUT.png")
    a("--json", action="store_true", help="machine-readable output on stdout")
    g = p.add_argument_group("without -f: compare policies by name on a default spec")
    g.add_argument("--policy", default="all", choices=(*POLICY_NAMES, "all"))
    g.add_argument(
        "--target",
        type=float,
        default=None,
        help="targetQueueDepthPerReplica"
        " (hpa, kpa), predictive.targetUtilization (predictive, oracle)",
    )
    g.add_argument("--interval", type=int, default=None, help="autoscaling.intervalSeconds")
    g.add_argument("--min", dest="min_replicas", type=int, default=1)
    g.add_argument("--max", dest="max_replicas", type=int, default=100)
    g.add_argument("--max-batch", type=int, default=16)
    g.add_argument("--max-queue-delay-ms", type=float, default=5.0)


def run_simulate(args: argparse.Namespace) -> int:
    from infleet_operator.simulator.fleet_config import FleetConfig
    from infleet_operator.simulator.profile import Profile, load_profile, with_pod_start
    from infleet_operator.simulator.rehearse import parse_slo
    from infleet_operator.simulator.traces import make_trace

    def say(message: str) -> None:
        if not args.json:
            print(message, file=sys.stderr, flush=True)

    try:
        slo = parse_slo(args.slo)
        profile = load_profile(args.profile) if args.profile else Profile()
        profile = with_pod_start(profile, args.start_delay)
        if args.prometheus:
            from infleet_operator.simulator.prometheus_trace import load_prometheus

            trace = load_prometheus(args.prometheus, args.since, args.selector)
        else:
            trace = make_trace(args.trace, args.duration, args.rate, args.seed)
    except (OSError, ValueError) as exc:
        print(f"infleet simulate: {exc}", file=sys.stderr)
        return 2
    shares = tuple(float(x) for x in args.priority_mix.split(",")) if args.priority_mix else ()
    base = FleetConfig(
        priority_shares=shares,
        lb=args.lb,
        seed=args.seed,
        start_delay_s=profile.pod_start_seconds,
        service_table=profile.service_table,
    )
    say(
        f"trace {trace.name}: {len(trace.arrivals):,} requests over {trace.duration:,.0f}s"
        f" ({trace.mean_rate:.1f} req/s mean)"
    )
    try:
        if args.filename:
            return _manifest_mode(args, trace, profile, base, slo, say)
        return _compare_mode(
            args,
            trace,
            replace(
                base, max_batch=args.max_batch, max_queue_delay_s=args.max_queue_delay_ms / 1000
            ),
            slo,
            say,
        )
    except ValueError as exc:
        print(f"infleet simulate: {exc}", file=sys.stderr)
        return 2


def _manifest_mode(
    args: argparse.Namespace, trace: Any, profile: Any, base: Any, slo: Any, say: Any
) -> int:
    from infleet_operator.simulator import rehearse as rh
    from infleet_operator.simulator.manifest import load_fleet, with_sets
    from infleet_operator.simulator.plot import plot_timelines, timeline_of

    fleet = with_sets(load_fleet(args.filename, args.name), args.sets)
    lengths = (args.prompt_tokens, args.output_tokens)
    if args.sweep:
        path, values = rh.sweep_values(args.sweep)
        runs = rh.sweep(fleet, path, values, trace, profile, base, slo, say, lengths)
        if args.json:
            json.dump(
                {
                    "field": path,
                    "values": values,
                    "slo": str(slo),
                    "results": [r.summary.as_dict() for r in runs],
                },
                sys.stdout,
                indent=2,
            )
            print()
        else:
            print(rh.describe(runs[0], profile))
            print(rh.format_sweep(path, values, runs, slo))
        if args.plot:
            plot_timelines(
                [timeline_of(r.label, r.result) for r in runs],
                slo.latency_s * 1000,
                args.plot,
                f"{fleet.name}: sweep of {path}",
            )
            say(f"plot written to {args.plot}")
        return 0
    run = rh.rehearse(fleet, trace, profile, base, slo, lengths=lengths)
    gen = run.result.generation
    if args.json:
        json.dump(
            {
                "fleet": fleet.name,
                "slo": str(slo),
                "policy": run.settings.policy,
                "params": {k: v for k, v in run.settings.params.items() if k != "rate"},
                "results": [run.summary.as_dict()],
                **({"generation": gen.as_dict()} if gen is not None else {}),
            },
            sys.stdout,
            indent=2,
        )
        print()
    else:
        from infleet_operator.simulator.gen_report import format_gen
        from infleet_operator.simulator.report import (
            format_priorities,
            format_table,
            per_priority,
        )

        print(rh.describe(run, profile))
        print(f"SLO: {slo}" + (" (latency: time to first token)" if gen is not None else ""))
        print(format_table([run.summary]))
        if gen is not None:
            print(format_gen(gen))
        levels = per_priority(run.result, slo.latency_s)
        if levels:
            print(format_priorities(levels))
        print(rh.format_actions(run))
    if args.plot:
        plot_timelines(
            [timeline_of(fleet.name, run.result)],
            slo.latency_s * 1000,
            args.plot,
            f"{fleet.name} ({run.settings.policy}) on {trace.name}",
        )
        say(f"plot written to {args.plot}")
    return 0


def _compare_mode(args: argparse.Namespace, trace: Any, base: Any, slo: Any, say: Any) -> int:
    from infleet_operator.simulator.fleet import simulate
    from infleet_operator.simulator.plot import plot_timelines, timeline_of
    from infleet_operator.simulator.report import format_table, summarize
    from infleet_operator.simulator.scenario import setup_policy

    names = POLICY_NAMES if args.policy == "all" else (args.policy,)
    results, rows = {}, []
    for name in names:
        target = None if args.policy == "all" else args.target
        loop, fleet = setup_policy(
            name, trace, base, target, args.min_replicas, args.max_replicas, args.interval
        )
        result = simulate(trace, loop, fleet)
        say(f"{name}: simulated")
        results[name] = result
        rows.append(summarize(name, result, slo.latency_s))
    if args.plot:
        plot_timelines(
            [timeline_of(n, r) for n, r in results.items()],
            slo.latency_s * 1000,
            args.plot,
            f"policies on {trace.name}",
        )
        say(f"plot written to {args.plot}")
    if args.json:
        json.dump(
            {"trace": trace.name, "slo": str(slo), "results": [r.as_dict() for r in rows]},
            sys.stdout,
            indent=2,
        )
        print()
    else:
        print(f"SLO {slo}, start delay {base.start_delay_s:.0f}s, lb {args.lb}")
        print(format_table(rows))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infleet_operator.simulator")
    configure_parser(parser)
    return run_simulate(parser.parse_args(argv))
