"""`infleet simulate -f fleet.yaml`: replay a trace through what the operator would do.

One run prints cost, SLO attainment, latency percentiles and scale actions;
``--sweep FIELD=V1,V2,..`` runs one simulation per value and prints the
cost/SLO frontier and the cheapest value that meets the SLO, as YAML to paste.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from infleet_operator.autoscaling.spec import LoopSettings
from infleet_operator.generation import generates
from infleet_operator.simulator.fleet import simulate
from infleet_operator.simulator.fleet_config import FleetConfig
from infleet_operator.simulator.gen_fleet import simulate_generation
from infleet_operator.simulator.gen_scenario import (
    engine_limits,
    engine_profile,
    setup_generation,
)
from infleet_operator.simulator.manifest import Fleet, parse_assignment, snippet, with_sets
from infleet_operator.simulator.profile import Profile
from infleet_operator.simulator.report import Summary, summarize
from infleet_operator.simulator.result import SimResult
from infleet_operator.simulator.scenario import fleet_for_spec, setup_for_spec
from infleet_operator.simulator.traces import Trace


@dataclass(frozen=True)
class Slo:
    latency_s: float = 0.5
    attainment: float = 0.99

    def __str__(self) -> str:
        return f"{self.attainment:.4g} of requests under {self.latency_s * 1000:g} ms"


def parse_slo(text: str) -> Slo:
    """``500ms@99%``, ``2s@99.9%``, ``99%`` (500 ms) or ``0.99``."""
    lat, _, att = text.rpartition("@")
    latency = 0.5
    if lat:
        lat = lat.strip().lower()
        latency = float(lat[:-2]) / 1000 if lat.endswith("ms") else float(lat.rstrip("s"))
    att = att.strip()
    goal = round(float(att[:-1]) / 100, 9) if att.endswith("%") else float(att)
    if not (0 < goal <= 1 and latency > 0):
        raise ValueError(f"--slo {text!r}: expected e.g. 500ms@99%")
    return Slo(latency, goal)


@dataclass(frozen=True)
class Run:
    label: str
    fleet: Fleet
    settings: LoopSettings
    result: SimResult
    summary: Summary
    fixed: bool = False  # autoscaling off in the manifest: spec.replicas, no scaling


def rehearse(
    fleet: Fleet,
    trace: Trace,
    profile: Profile,
    base: FleetConfig,
    slo: Slo,
    label: str = "",
    progress: Callable[[float], None] | None = None,
    lengths: tuple[int | None, int | None] = (None, None),
) -> Run:
    """Simulate ``fleet``'s manifest exactly as the operator would scale it (a generative
    fleet: ``lengths`` are the prompt and output tokens of requests the trace leaves open)."""
    fixed = not fleet.spec.autoscaling.enabled
    fleet = fixed_if_off(fleet)
    if generates(fleet.spec):
        gloop, gen = setup_generation(fleet.spec, profile, base, *lengths)
        result = simulate_generation(trace, gloop, gen)
        settings = gloop.settings
    else:
        config = fleet_for_spec(fleet.spec, profile, base)
        loop, config = setup_for_spec(fleet.spec.autoscaling, config)
        result = simulate(trace, loop, config, progress)
        settings = loop.settings
    name = label or ("fixed" if fixed else fleet.spec.autoscaling.policy.value)
    summary = summarize(name, result, slo.latency_s, fleet.gpus_per_pod)
    return Run(name, fleet, settings, result, summary, fixed)


def fixed_if_off(fleet: Fleet) -> Fleet:
    """Autoscaling off: the operator keeps spec.replicas, so the fleet runs at that size
    (bounds min = max = replicas); ``--set autoscaling.enabled=true`` rehearses scaling."""
    if fleet.spec.autoscaling.enabled:
        return fleet
    n = max(fleet.spec.replicas, 1)
    fixed = ("enabled=true", f"minReplicas={n}", f"maxReplicas={n}")
    return with_sets(fleet, [f"autoscaling.{a}" for a in fixed])


def sweep_values(text: str) -> tuple[str, list[object]]:
    path, values = parse_assignment(text)
    if isinstance(values, str) and "," in values:
        values = [parse_assignment(f"x={v}")[1] for v in values.split(",")]
    elif not isinstance(values, list):
        values = [values]
    if not values:
        raise ValueError(f"--sweep {text!r}: expected FIELD=V1,V2,...")
    return path, values


def sweep(
    fleet: Fleet,
    path: str,
    values: list[object],
    trace: Trace,
    profile: Profile,
    base: FleetConfig,
    slo: Slo,
    say: Callable[[str], None],
    lengths: tuple[int | None, int | None] = (None, None),
) -> list[Run]:
    runs = []
    for v in values:
        variant = with_sets(fleet, [f"{path}={v}"])
        run = rehearse(variant, trace, profile, base, slo, f"{path}={v}", lengths=lengths)
        say(f"  {run.label}: {run.summary.slo_attainment:.2%}, {run.summary.gpu_hours:.2f} GPU-h")
        runs.append(run)
    return runs


def frontier(runs: list[Run]) -> list[bool]:
    """True for runs no other run beats on both cost and attainment."""
    out = []
    for r in runs:
        s = r.summary
        out.append(
            not any(
                o.summary.replica_seconds <= s.replica_seconds
                and o.summary.slo_attainment >= s.slo_attainment
                and (o.summary.replica_seconds, o.summary.slo_attainment)
                != (s.replica_seconds, s.slo_attainment)
                for o in runs
            )
        )
    return out


def cheapest_meeting(runs: list[Run], slo: Slo) -> Run | None:
    ok = [r for r in runs if r.summary.slo_attainment >= slo.attainment]
    return min(ok, key=lambda r: r.summary.replica_seconds) if ok else None


def format_sweep(path: str, values: list[object], runs: list[Run], slo: Slo) -> str:
    name = path.rsplit(".", 1)[-1]
    width = max(len(name), *(len(str(v)) for v in values)) + 2
    head = (
        f"{name:<{width}} {'SLO att.':>9} {'p99 ms':>8} {'replica-s':>10}"
        f" {'GPU-h':>8} {'actions':>7}  frontier"
    )
    lines = [f"sweep of {path} (SLO: {slo})", head, "-" * len(head)]
    for v, r, front in zip(values, runs, frontier(runs), strict=True):
        s = r.summary
        p99 = f"{s.p99_ms:.0f}" if s.p99_ms != float("inf") else "dropped"
        lines.append(
            f"{v!s:<{width}} {s.slo_attainment:>9.2%} {p99:>8} {s.replica_seconds:>10.0f}"
            f" {s.gpu_hours:>8.2f} {s.scale_actions:>7d}  {'*' if front else ''}"
        )
    best = cheapest_meeting(runs, slo)
    if best is None:
        top = max(runs, key=lambda r: r.summary.slo_attainment)
        lines.append(
            f"\nno value meets the SLO; the best reaches {top.summary.slo_attainment:.2%}"
            f" ({top.label}). Widen the sweep or raise autoscaling.minReplicas."
        )
    else:
        value = values[runs.index(best)]
        lines.append(
            f"\ncheapest setting meeting the SLO: {path}={value}"
            f" ({best.summary.gpu_hours:.2f} GPU-h, {best.summary.slo_attainment:.2%})."
            " Paste into the manifest:\n"
        )
        lines.append(snippet(path, value).rstrip())
    return "\n".join(lines)


def format_actions(run: Run, limit: int = 12) -> str:
    reasons = run.result.reasons
    lines = [f"scale actions: {len(reasons)}"]
    for t, old, new, why in reasons[:limit]:
        lines.append(f"  t={t:7.0f}s  {old:>3} -> {new:<3} {why[:100]}")
    if len(reasons) > limit:
        lines.append(f"  ... {len(reasons) - limit} more")
    return "\n".join(lines)


def describe(run: Run, profile: Profile) -> str:
    s, spec = run.settings, run.fleet.spec
    cap = profile.capacity_per_replica(spec.batching.max_batch_size)
    what = f"{cap:.1f} req/s per replica at batch {spec.batching.max_batch_size}"
    source = profile.source
    if s.tokens is not None and profile.generate is None:
        source = "no generate section"
    if s.tokens is not None:
        running = engine_limits(spec).max_running
        gen = engine_profile(spec, profile)
        what = (
            f"{gen.tokens_per_second(running):.0f} tokens/s per replica at {running} running"
            f" sequences, KV cache {gen.kv_capacity_tokens:,} tokens"
        )
        if profile.generate is None:
            what += " (assumed: a small model on a mid-range GPU; measure with `infleet profile"
            what += " --generate`)"
    scaling = f"{s.policy}, {s.min_replicas}..{s.max_replicas} replicas"
    if run.fixed:
        scaling = f"autoscaling off: spec.replicas={s.max_replicas} fixed"
    return (
        f"fleet {run.fleet.name}: {scaling},"
        f" decision every {s.decision_period_s:g} s, metrics every {s.scrape_interval_s:g} s,"
        f" lead {s.lead_s:g} s, {run.fleet.gpus_per_pod} GPU(s) per pod\n"
        f"profile: {source}; {what}; pod start {profile.pod_start_seconds:g} s"
    )
