"""Replica service model: batch size -> seconds, from a small table."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

# A BERT-large-class encoder at long sequence length on one mid-range GPU:
# ~12 req/s unbatched, ~42 req/s at batch 16. Override with bench figures.
DEFAULT_TABLE: tuple[tuple[int, float], ...] = (
    (1, 0.080),
    (2, 0.100),
    (4, 0.140),
    (8, 0.220),
    (16, 0.380),
    (32, 0.720),
)


def service_times(table: tuple[tuple[int, float], ...], max_batch: int) -> list[float]:
    """Seconds for each batch size 0..max_batch (index 0 unused), linearly interpolated."""
    sizes = np.array([b for b, _ in sorted(table)], dtype=np.float64)
    secs = np.array([s for _, s in sorted(table)], dtype=np.float64)
    b = np.arange(max_batch + 1, dtype=np.float64)
    out = np.interp(b, sizes, secs)
    if max_batch > sizes[-1]:  # extrapolate the last slope
        slope = (secs[-1] - secs[-2]) / (sizes[-1] - sizes[-2]) if len(sizes) > 1 else 0.0
        tail = b > sizes[-1]
        out[tail] = secs[-1] + slope * (b[tail] - sizes[-1])
    return [float(x) for x in out]


def saturated_throughput(table: tuple[tuple[int, float], ...], max_batch: int) -> float:
    """Requests/s one replica finishes with full batches."""
    return max_batch / service_times(table, max_batch)[max_batch]


def load_table(path: str | Path) -> tuple[tuple[int, float], ...]:
    """JSON ``{"1": 0.08, ...}`` or ``[[1, 0.08], ...]``, or CSV ``batch,seconds``.

    A CSV column named ``ms`` or ``latency_ms`` is read as milliseconds.
    """
    text = Path(path).read_text()
    if str(path).endswith(".json"):
        data = json.loads(text)
        items = data.items() if isinstance(data, dict) else data
        return tuple(sorted((int(b), float(s)) for b, s in items))
    rows = [r for r in csv.reader(text.splitlines()) if r]
    scale = 1.0
    if rows and not rows[0][0].strip().isdigit():
        unit = rows[0][1].strip().lower() if len(rows[0]) > 1 else ""
        scale = 1e-3 if "ms" in unit else 1.0
        rows = rows[1:]
    return tuple(sorted((int(r[0]), float(r[1]) * scale) for r in rows))
