"""A measured profile of one model on one device: the simulator's calibration.

``service_table``: seconds one replica takes for a batch of each size, measured
through the worker (its statistics extension: per batch size, the time from
batch assembly to outputs ready: input, infer and output), so the real
overheads are in it. ``pod_start_seconds``: pod create-to-Ready time, as the
operator measures it (``status.podStartSeconds``).

File format (JSON)::

    {"model": "encoder", "device": "cuda", "source": "http://10.0.0.7:8000",
     "pod_start_seconds": 42.0,
     "service_table": [[1, 0.0081], [8, 0.0113], [32, 0.0242]]}

A generative model's profile also has a ``generate`` section (prefill and decode time
per token, KV capacity in tokens: :mod:`infleet_operator.simulator.gen_profile`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from infleet_operator.simulator.gen_profile import GenerateProfile, generate_from_dict
from infleet_operator.simulator.service import DEFAULT_TABLE, load_table, saturated_throughput

DEFAULT_POD_START_S = 120.0


@dataclass(frozen=True)
class Profile:
    service_table: tuple[tuple[int, float], ...] = DEFAULT_TABLE
    pod_start_seconds: float = DEFAULT_POD_START_S
    model: str = ""
    device: str = ""
    source: str = "assumed: a BERT-large-class encoder on a mid-range GPU, 120 s pod start"
    generate: GenerateProfile | None = None  # a generative model's step times and KV capacity

    def capacity_per_replica(self, max_batch: int) -> float:
        """Requests/s one replica finishes with full batches of ``max_batch``."""
        return saturated_throughput(self.service_table, max_batch)

    def to_json(self) -> str:
        data = asdict(self)
        del data["generate"]
        rows = ",\n    ".join(json.dumps([b, round(s, 6)]) for b, s in self.service_table)
        data["service_table"] = "@TABLE@"
        text = json.dumps(data, indent=2).replace('"@TABLE@"', f"[\n    {rows}\n  ]")
        if self.generate is None:
            return text + "\n"
        gen = self.generate.as_dict()  # a generating model: this section, no batch table
        steps = ", ".join(json.dumps(row) for row in gen.pop("decode_table"))
        body = "".join(f',\n    "{k}": {json.dumps(v)}' for k, v in gen.items())
        section = f'"generate": {{\n    "decode_table": [{steps}]{body}\n  }}'
        return text.replace(f'"service_table": [\n    {rows}\n  ]', section) + "\n"


def load_profile(path: str | Path) -> Profile:
    """A profile JSON (see module doc), or a bare service table (JSON/CSV)."""
    p = Path(path)
    text = p.read_text()
    if p.suffix == ".json":
        data = json.loads(text)
        if isinstance(data, dict) and ("service_table" in data or "generate" in data):
            rows = data.get("service_table", DEFAULT_TABLE)  # a generate-only profile has none
            table = tuple(sorted((int(b), float(s)) for b, s in rows))
            if not table:
                raise ValueError(f"{path}: service_table is empty")
            start = float(data.get("pod_start_seconds") or DEFAULT_POD_START_S)
            gen = data.get("generate")
            return Profile(
                table,
                start,
                str(data.get("model", "")),
                str(data.get("device", "")),
                str(data.get("source", str(path))),
                generate_from_dict(gen) if isinstance(gen, dict) else None,
            )
    return Profile(service_table=load_table(p), source=str(path))


def table_from_statistics(stats: Mapping[str, Any], model: str) -> tuple[tuple[int, float], ...]:
    """Batch size -> mean seconds from a KServe v2 statistics reply (Triton's ``batch_stats``)."""
    models = stats.get("model_stats") or []
    entry = next((m for m in models if m.get("name") == model), models[0] if models else None)
    if entry is None:
        raise ValueError(f"no statistics for model {model!r} in the reply")
    table = []
    for b in entry.get("batch_stats") or []:
        count = int(b["compute_infer"]["count"])
        if count <= 0:
            continue
        ns = sum(int(b[k]["ns"]) for k in ("compute_input", "compute_infer", "compute_output"))
        table.append((int(b["batch_size"]), ns / count / 1e9))
    if not table:
        raise ValueError(
            f"model {entry.get('name', model)!r} has executed no batches yet: send it traffic "
            "(its usual mix, or bench/serving.py) and profile again"
        )
    return tuple(sorted(table))


def with_pod_start(profile: Profile, seconds: float | None) -> Profile:
    return profile if seconds is None else replace(profile, pod_start_seconds=float(seconds))
