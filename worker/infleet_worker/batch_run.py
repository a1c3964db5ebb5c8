"""Run one merged batch and give each member its own answer: merge, run, split, isolate.

A batch is many strangers' requests. When the engine fails on it, only the
guilty must fail: the batch is bisected (each half run on its own) until every
failing request stands alone, with the extra runs bounded. An output row that is
not finite (NaN/Inf) where the model declares the output finite fails that
request alone. A fatal device error (a device-side assert, an illegal memory
access, a lost context) is not bisected: the device can no longer be trusted, so
it is raised to the caller, which fails every request as retryable and exits.

Used by both the in-process batcher and the engine core.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from infleet_worker.domains import nonfinite_rows
from infleet_worker.engine.base import DeviceLostError, EngineError, TensorInfo
from infleet_worker.protocol.errors import ErrorKind, InferError
from infleet_worker.tensors import Tensor

log = logging.getLogger("infleet_worker.batch")

RunFn = Callable[[dict[str, Tensor]], dict[str, Tensor]]

# Messages of errors after which a CUDA context is unusable (torch / CUDA wording).
FATAL_MARKERS = (
    "device-side assert",
    "illegal memory access",
    "unspecified launch failure",
    "CUDA error: an illegal instruction",
    "misaligned address",
    "context is destroyed",
    "CUDA driver error",
    "ECC error",
    "cudaErrorLaunchFailure",
)


class FatalDeviceError(RuntimeError):
    """The device is unusable: fail everything as retryable and restart the worker."""


def is_fatal(message: str) -> bool:
    return any(m in message for m in FATAL_MARKERS)


@dataclass(slots=True)
class BatchTiming:
    """Durations of one executed batch (ns)."""

    batch_size: int  # rows
    requests: int
    input_ns: int
    infer_ns: int
    output_ns: int


@dataclass(slots=True)
class BatchOutcome:
    """Per member: its outputs or its error, in member order; plus what it cost."""

    results: list[dict[str, Tensor] | InferError]
    timing: BatchTiming
    runs: int  # engine runs (1 unless a failure was isolated)
    isolated: int  # members that failed while others succeeded


def merge(members: Sequence[dict[str, Tensor]]) -> dict[str, Tensor]:
    """The members' inputs concatenated along dim 0 (a lone request's, copied if read-only)."""
    if len(members) == 1:
        merged = {}
        for n, t in members[0].items():
            a = t.array
            merged[n] = t if a.flags.writeable else Tensor(t.datatype, a.copy())
        return merged
    first = members[0]
    return {
        n: Tensor(t.datatype, np.concatenate([m[n].array for m in members], axis=0))
        for n, t in first.items()
    }


def split(out: dict[str, Tensor], rows: Sequence[int]) -> list[dict[str, Tensor]]:
    """Each member's rows of every output; the engine must return sum(rows) rows."""
    total = sum(rows)
    for n, t in out.items():
        if t.batch != total:
            raise EngineError(f"engine returned {t.batch} rows for output '{n}', expected {total}")
    if len(rows) == 1:
        return [out]
    parts: list[dict[str, Tensor]] = []
    start = 0
    for r in rows:
        end = start + r
        parts.append({n: Tensor(t.datatype, t.array[start:end]) for n, t in out.items()})
        start = end
    return parts


class _Runner:
    def __init__(self, run: RunFn, outputs: Mapping[str, TensorInfo], max_runs: int) -> None:
        self.run = run
        self.outputs = outputs
        self.runs = 0
        self.max_runs = max_runs
        self.infer_ns = 0
        self.merge_ns = 0
        self.split_ns = 0

    def once(
        self, members: Sequence[dict[str, Tensor]], rows: Sequence[int]
    ) -> tuple[list[dict[str, Tensor]], dict[int, str]]:
        t0 = time.perf_counter_ns()
        merged = merge(members)
        t1 = time.perf_counter_ns()
        self.runs += 1
        try:
            out = self.run(merged)
        finally:
            t2 = time.perf_counter_ns()
            self.merge_ns += t1 - t0
            self.infer_ns += t2 - t1
        bad_rows = nonfinite_rows(out, self.outputs)
        parts = split(out, rows)
        self.split_ns += time.perf_counter_ns() - t2
        return parts, bad_rows

    def solve(
        self, members: Sequence[dict[str, Tensor]], rows: Sequence[int]
    ) -> list[dict[str, Tensor] | InferError]:
        try:
            parts, bad_rows = self.once(members, rows)
        except Exception as e:
            msg = str(e)
            lost = (DeviceLostError, FatalDeviceError)
            if is_fatal(msg) or isinstance(e, lost) or isinstance(e.__cause__, lost):
                raise FatalDeviceError(msg) from e
            if not isinstance(e, EngineError | InferError):
                log.exception("engine raised on a batch of %d requests", len(members))
            if len(members) == 1 or self.runs + 2 > self.max_runs:
                err = e if isinstance(e, InferError) else _model_failed(msg)
                return [err] * len(members)
            mid = len(members) // 2
            return self.solve(members[:mid], rows[:mid]) + self.solve(members[mid:], rows[mid:])
        results: list[dict[str, Tensor] | InferError] = list(parts)
        if bad_rows:  # rows with NaN/Inf where the output is declared finite
            member = np.repeat(np.arange(len(rows)), rows)
            for row, message in bad_rows.items():
                i = int(member[row])
                if not isinstance(results[i], InferError):
                    results[i] = InferError(ErrorKind.INTERNAL, message)
        return results


def _model_failed(message: str) -> InferError:
    return InferError(ErrorKind.INTERNAL, f"model failed: {message}")


def run_batch(
    run: RunFn,
    members: Sequence[dict[str, Tensor]],
    rows: Sequence[int],
    outputs: Mapping[str, TensorInfo] | None = None,
) -> BatchOutcome:
    """Run ``members`` as one batch; on failure bisect to find the guilty ones.

    ``outputs``: the model's output signature; a row with NaN/Inf in an output whose
    domain says finite fails its request alone (domains.nonfinite_rows). Extra runs
    are bounded by ``2 * len(members)``: past that the rest fail together.
    Raises FatalDeviceError when the device is lost.
    """
    r = _Runner(run, outputs or {}, max_runs=2 * len(members) + 1)
    results = r.solve(members, rows)
    failed = sum(1 for x in results if isinstance(x, InferError))
    isolated = failed if failed < len(results) else 0
    if r.runs > 1:
        log.warning(
            "batch of %d requests failed; isolated %d failing request(s) in %d runs",
            len(members),
            failed,
            r.runs,
            extra={"event": "batch_isolated"},
        )
    timing = BatchTiming(sum(rows), len(members), r.merge_ns, r.infer_ns, r.split_ns)
    return BatchOutcome(results, timing, r.runs, isolated)
