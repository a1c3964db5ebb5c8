"""One pod, one scrape: sum the metrics and statistics of the pod's processes.

Each process owns disjoint gauges (queue depth: the engine core; in-flight: each
front end; ready: the supervisor) and its own counters and histograms, so every
series of the pod is the sum of that series over its processes. ``_created``
samples (per-process start times) are dropped: they do not add up.
"""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families


def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return f"{int(value)}.0"
    return repr(value)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def merge_metrics(texts: list[str]) -> str:
    """Prometheus text expositions -> one, each series summed over the inputs."""
    families: dict[str, tuple[str, str]] = {}  # name -> (type, help)
    samples: dict[str, dict[tuple[str, tuple[tuple[str, str], ...]], float]] = {}
    for text in texts:
        for fam in text_string_to_metric_families(text):
            families.setdefault(fam.name, (fam.type, fam.documentation))
            series = samples.setdefault(fam.name, {})
            for s in fam.samples:
                if s.name.endswith("_created"):
                    continue
                key = (s.name, tuple(sorted(s.labels.items())))
                series[key] = series.get(key, 0.0) + s.value
    lines: list[str] = []
    for name, (kind, doc) in families.items():
        if not samples[name]:
            continue  # e.g. the _created families: nothing left to show
        lines.append(f"# HELP {name} {doc}")
        lines.append(f"# TYPE {name} {kind}")
        for (sname, labels), value in samples[name].items():
            label = ",".join(f'{k}="{_escape(v)}"' for k, v in labels)
            lines.append(f"{sname}{{{label}}} {_fmt(value)}" if label else f"{sname} {_fmt(value)}")
    return "\n".join(lines) + "\n"


def _add(into: dict[str, Any], doc: dict[str, Any]) -> None:
    for k, v in doc.items():
        if isinstance(v, dict):
            _add(into.setdefault(k, {}), v)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            into[k] = into.get(k, 0) + v
        else:
            into.setdefault(k, v)


def merge_stats(docs: list[dict[str, Any]]) -> dict[str, Any]:
    """Triton model statistics of several processes -> the pod's (counts and ns summed)."""
    out: dict[str, Any] = {}
    batches: dict[int, dict[str, Any]] = {}
    last = 0
    for doc in docs:
        last = max(last, int(doc.get("last_inference", 0)))
        for b in doc.get("batch_stats", []):
            size = int(b["batch_size"])
            entry = batches.setdefault(size, {"batch_size": size})
            _add(entry, {k: v for k, v in b.items() if k != "batch_size"})
        _add(out, {k: v for k, v in doc.items() if k not in ("batch_stats", "last_inference")})
    out["last_inference"] = last
    out["batch_stats"] = [batches[s] for s in sorted(batches)]
    out.setdefault("memory_usage", [])
    return out
