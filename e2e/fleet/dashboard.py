"""The chart's Grafana dashboard, evaluated against a real Prometheus: every panel's
PromQL with the dashboard variables filled in, and a matplotlib picture of the panels
drawn from the same queries (docs/dashboard.png)."""

from __future__ import annotations

import json
import math
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "charts" / "infleet" / "files" / "dashboards" / "infleet-fleet.json"


@dataclass(frozen=True)
class Query:
    panel: str
    expr: str
    legend: str

    @property
    def gpu(self) -> bool:
        """GPU panels have no data on a host without GPUs (absent, not zero)."""
        return "nv_gpu_" in self.expr


def panel_queries(variables: dict[str, str], path: Path = DASHBOARD) -> list[Query]:
    doc = json.loads(path.read_text())
    out = []
    for panel in doc["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in sorted(variables.items(), key=lambda kv: -len(kv[0])):
                expr = expr.replace(f"${name}", value)
            assert "$" not in expr, f"unfilled variable in {panel['title']!r}: {expr}"
            out.append(Query(panel["title"], expr, target.get("legendFormat", "")))
    return out


def has_values(result: list[dict[str, Any]]) -> bool:
    """At least one series with a real number (NaN, e.g. 0/0, is no answer)."""
    return any(not math.isnan(float(r["value"][1])) for r in result)


def query_range(url: str, expr: str, start: float, end: float, step: float) -> list[Any]:
    params = urllib.parse.urlencode({"query": expr, "start": start, "end": end, "step": step})
    with urllib.request.urlopen(f"{url}/api/v1/query_range?{params}", timeout=20) as r:
        doc = json.loads(r.read())
    result: list[Any] = doc["data"]["result"]
    return result


def render(url: str, queries: list[Query], start: float, out: Path) -> None:
    """Each panel as a matplotlib subplot, from query_range over [start, now]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    end = time.time()
    titles = list(dict.fromkeys(q.panel for q in queries))
    rows = math.ceil(len(titles) / 2)
    fig, axes = plt.subplots(rows, 2, figsize=(13, 3.2 * rows), squeeze=False)
    for ax, title in zip(axes.flat, titles, strict=False):
        ax.set_title(title, fontsize=10)
        drawn = False
        for q in (q for q in queries if q.panel == title):
            for series in query_range(url, q.expr, start, end, 1.0):
                xs = [float(t) - start for t, _ in series["values"]]
                ys = [float(v) for _, v in series["values"]]
                label = q.legend
                for k, v in series["metric"].items():
                    label = label.replace("{{" + k + "}}", v)
                ax.plot(xs, ys, label=label[:40], linewidth=1)
                drawn = True
        if drawn:
            ax.legend(fontsize=7, loc="upper left")
        else:
            ax.text(0.5, 0.5, "no data (no GPU)", ha="center", va="center", transform=ax.transAxes)
        ax.set_xlabel("s", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(titles) :]:
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out, dpi=80)
    plt.close(fig)
