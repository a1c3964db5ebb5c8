"""Triton-style per-model statistics (what perf_analyzer and `/v2/models/stats` read)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from infleet_worker.batch_run import BatchTiming

DURATIONS = (
    "success",
    "fail",
    "queue",
    "compute_input",
    "compute_infer",
    "compute_output",
    "cache_hit",
    "cache_miss",
)


@dataclass(slots=True)
class Duration:
    count: int = 0
    ns: int = 0

    def add(self, ns: int, count: int = 1) -> None:
        self.count += count
        self.ns += ns

    def to_json(self) -> dict[str, int]:
        return {"count": self.count, "ns": self.ns}


@dataclass(slots=True)
class BatchStat:
    compute_input: Duration = field(default_factory=Duration)
    compute_infer: Duration = field(default_factory=Duration)
    compute_output: Duration = field(default_factory=Duration)


class ModelStats:
    def __init__(self, name: str, version: str) -> None:
        self.name = name
        self.version = version
        self.last_inference_ms = 0
        self.inference_count = 0  # rows inferred (Triton: batch elements)
        self.execution_count = 0  # batches executed
        self.d = {k: Duration() for k in DURATIONS}
        self.batches: dict[int, BatchStat] = {}

    def on_batch(self, t: BatchTiming) -> None:
        self.execution_count += 1
        self.inference_count += t.batch_size
        self.last_inference_ms = int(time.time() * 1000)
        b = self.batches.get(t.batch_size)
        if b is None:
            b = self.batches[t.batch_size] = BatchStat()
        b.compute_input.add(t.input_ns)
        b.compute_infer.add(t.infer_ns)
        b.compute_output.add(t.output_ns)

    def on_computed(self, queue_ns: int, t: BatchTiming) -> None:
        """Per request: its queue time and its batch's compute times (as Triton counts)."""
        self.d["queue"].add(queue_ns)
        self.d["compute_input"].add(t.input_ns)
        self.d["compute_infer"].add(t.infer_ns)
        self.d["compute_output"].add(t.output_ns)

    def on_cache_hit(self, rows: int, lookup_ns: int) -> None:
        self.d["cache_hit"].add(lookup_ns)
        self.inference_count += rows
        self.last_inference_ms = int(time.time() * 1000)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "last_inference": self.last_inference_ms,
            "inference_count": self.inference_count,
            "execution_count": self.execution_count,
            "inference_stats": {k: v.to_json() for k, v in self.d.items()},
            "batch_stats": [
                {
                    "batch_size": size,
                    "compute_input": b.compute_input.to_json(),
                    "compute_infer": b.compute_infer.to_json(),
                    "compute_output": b.compute_output.to_json(),
                }
                for size, b in sorted(self.batches.items())
            ],
            "memory_usage": [],
        }
