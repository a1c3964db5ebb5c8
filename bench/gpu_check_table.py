"""The one summary table of bench/gpu_check.py, from its steps and the benches' JSON."""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

PYTEST_SUMMARY = re.compile(r"\d+ (passed|failed|error|errors|skipped)\b")


def fmt(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def step_rows(steps: Sequence[Any]) -> list[tuple[str, str]]:
    rows = []
    for step in steps:
        said = next((ln.strip("= ") for ln in reversed(step.tail) if PYTEST_SUMMARY.search(ln)), "")
        rows.append((step.name, f"{step.status} in {step.seconds:.0f}s  {said}".rstrip()))
    return rows


def pipeline_rows(data: dict[str, Any] | None) -> list[tuple[str, str]]:
    if not data:
        return [("pp2 / pp1 rows/s", "no figures")]
    rates = {int(k): v for k, v in data["rows_per_s"].items()}
    if 1 not in rates or 2 not in rates:
        return [("pp2 / pp1 rows/s", f"incomplete: {rates}")]
    ratio = rates[2] / rates[1]
    return [("pp2 / pp1 rows/s", f"{ratio:.3f}  (pp1 {rates[1]:.0f}, pp2 {rates[2]:.0f} rows/s)")]


def serving_rows(data: dict[str, Any] | None) -> list[tuple[str, str]]:
    """The worker pod end to end: served rows/s as a share of the engine alone."""
    if not data:
        return [("serving: pod / engine alone", "no figures")]
    out = [("serving: engine alone rows/s", f"{data['engine_rows_per_s']:.0f}")]
    for r in data["rows"]:
        out.append((
            f"serving: {r['protocol']} {r['rows_per_request']} row(s) x {r['concurrency']}",
            f"{r['share']:.0%} of the engine ({r['rows_per_s']:.0f} rows/s), "
            f"p99 {r['p99_ms']:.1f} ms, {r['rows_per_batch']:.1f} rows/batch",
        ))  # fmt: skip
    return out


def ceiling_rows(data: list[dict[str, Any]] | None) -> list[tuple[str, str]]:
    if not data:
        return [("engine ceiling", "no figures")]
    timed = [r for r in data if "rows_per_s" in r]
    models = sorted({r["model"] for r in timed if r["model"] != "raw-encoder"})
    batches = sorted({r["batch"] for r in timed})
    rate = {(r["model"], r["precision"], r["batch"]): r["rows_per_s"] for r in timed}
    ms = {(r["model"], r["precision"], r["batch"]): r["ms"] for r in timed}
    cols = " | ".join(f"b{b}" for b in batches)
    out: list[tuple[str, str]] = []
    for model in models:
        precisions = list(dict.fromkeys(r["precision"] for r in timed if r["model"] == model))
        base = "bf16" if "bf16" in precisions else precisions[0]
        times = " | ".join(fmt(ms.get((model, base, b))) for b in batches)
        out.append((f"{model} {base} ms/batch ({cols})", times))
        for precision in precisions:
            if precision == base:
                continue
            ratios = " | ".join(
                fmt(_ratio(rate.get((model, precision, b)), rate.get((model, base, b))))
                for b in batches
            )
            out.append((f"{model} {precision} / {base} rows/s ({cols})", ratios))
        if model == "encoder-base" and any(r["model"] == "raw-encoder" for r in timed):
            raw = " | ".join(  # the raw encoder has encoder-base's shape, nothing else's
                fmt(_ratio(rate.get((model, base, b)), rate.get(("raw-encoder", base, b))))
                for b in batches
            )
            out.append((f"{model} engine / raw encoder, {base} ({cols})", raw))
    for r in data:
        if "skipped" in r:
            reason = r["skipped"].split("precision ", 1)[-1]  # past the source's name
            out.append((f"{r['model']} {r['precision']}", f"refused: precision {reason}"))
    return out


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or not b else a / b


def summary(
    head: str,
    steps: Sequence[Any],
    results: dict[str, Any],
    notes: Sequence[str],
    elapsed: float,
) -> str:
    rows = step_rows(steps)
    rows += pipeline_rows(results.get("pipeline"))
    rows += ceiling_rows(results.get("ceiling"))
    rows += serving_rows(results.get("serving"))
    width = max(len(name) for name, _ in rows)
    lines = [f"== {head}, {elapsed:.0f}s in all", f"{'check':<{width}}  result"]
    lines.append(f"{'-' * width}  {'-' * 40}")
    lines += [f"{name:<{width}}  {value}" for name, value in rows]
    lines += [f"note: {n}" for n in notes]
    return "\n".join(lines)
