"""The one interface between the serving layer and whatever runs the model.

The batcher hands an engine a merged batch (every input with the same first
dimension) and gets every output back with that first dimension. ``run`` is
synchronous and called from one thread (the engine core's loop, or the
in-process batcher's engine thread); engines need no locking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from infleet_worker.config import Datatype
from infleet_worker.tensors import Tensor

FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64", "BF16"})


@dataclass(frozen=True, slots=True)
class Domain:
    """The values a tensor's elements may take (checked before batching; see docs/worker.md).

    - ``min`` / ``max``: numeric bounds, both **inclusive** (token ids of a 30522-word
      vocabulary: ``Domain(min=0, max=30521)``). NaN is outside no range: use ``finite``.
    - ``values``: the allowed set, e.g. ``{0, 1}`` for an attention mask.
    - ``finite``: floats only; NaN and +-Inf are refused (inputs) or fail the row (outputs).
    - ``max_bytes``: BYTES only; the longest element, in bytes.
    """

    min: float | None = None
    max: float | None = None
    values: frozenset[float] | None = None
    finite: bool = False
    max_bytes: int | None = None

    def __post_init__(self) -> None:
        if self.min is not None and self.max is not None and self.min > self.max:
            raise ValueError(f"domain min ({self.min}) must be <= max ({self.max})")
        if self.values is not None:
            if not isinstance(self.values, frozenset):
                object.__setattr__(self, "values", frozenset(self.values))
            if not self.values:
                raise ValueError("domain values must not be empty")
        if self.max_bytes is not None and self.max_bytes < 1:
            raise ValueError(f"domain maxBytes must be >= 1, got {self.max_bytes}")

    def check_datatype(self, datatype: str) -> None:
        """ValueError when a rule cannot apply to ``datatype`` (e.g. maxBytes on FP32)."""
        numeric = self.min is not None or self.max is not None or self.values is not None
        if datatype == "BYTES" and (numeric or self.finite):
            raise ValueError("BYTES tensors take only maxBytes (not min, max, values, finite)")
        if datatype != "BYTES" and self.max_bytes is not None:
            raise ValueError(f"maxBytes applies to BYTES tensors, not {datatype}")
        if self.finite and datatype not in FLOAT_TYPES:
            raise ValueError(f"finite applies to floating-point tensors, not {datatype}")

    def to_wire(self) -> dict[str, Any]:
        """The camelCase JSON form (signature files, model metadata/config); unset omitted."""
        out: dict[str, Any] = {}
        if self.min is not None:
            out["min"] = _number(self.min)
        if self.max is not None:
            out["max"] = _number(self.max)
        if self.values is not None:
            out["values"] = sorted(_number(v) for v in self.values)
        if self.finite:
            out["finite"] = True
        if self.max_bytes is not None:
            out["maxBytes"] = self.max_bytes
        return out

    @classmethod
    def from_wire(cls, data: dict[str, Any]) -> Domain:
        unknown = set(data) - {"min", "max", "values", "finite", "maxBytes"}
        if unknown:
            raise ValueError(f"unknown domain fields {sorted(unknown)}")
        values = data.get("values")
        return cls(
            min=data.get("min"),
            max=data.get("max"),
            values=frozenset(values) if values is not None else None,
            finite=bool(data.get("finite", False)),
            max_bytes=data.get("maxBytes"),
        )

    def describe(self) -> str:
        """The rules in words, e.g. ``integers in [0, 30521]`` (for logs and docs)."""
        parts = []
        if self.min is not None or self.max is not None:
            lo = "-inf" if self.min is None else _number(self.min)
            hi = "inf" if self.max is None else _number(self.max)
            parts.append(f"in [{lo}, {hi}]")
        if self.values is not None:
            parts.append("one of " + format_values(self.values))
        if self.finite:
            parts.append("finite")
        if self.max_bytes is not None:
            parts.append(f"at most {self.max_bytes} bytes")
        return ", ".join(parts)


# Float outputs of the builtins (and float inputs of mlp/synthetic): no NaN, no Inf.
FINITE = Domain(finite=True)


def _number(value: float) -> int | float:
    return int(value) if float(value).is_integer() else float(value)


def format_values(values: frozenset[float]) -> str:
    return "{" + ", ".join(str(_number(v)) for v in sorted(values)) + "}"


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Signature entry: per-item shape without the batch dimension (-1 = free)."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    # The client may leave this input out; the model fills in a default.
    optional: bool = False
    # The values its elements may take; None = any value of the datatype.
    domain: Domain | None = None

    def __post_init__(self) -> None:
        if self.domain is not None:
            try:
                self.domain.check_datatype(self.datatype)
            except ValueError as exc:
                raise ValueError(f"tensor '{self.name}': {exc}") from None


@dataclass(frozen=True, slots=True)
class Signature:
    """What a front end needs to know of the model it serves (no torch, no device)."""

    name: str
    version: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    max_batch_size: int
    row_independent: bool

    @classmethod
    def of(cls, engine: Engine) -> Signature:
        return cls(
            engine.name,
            engine.version,
            list(engine.inputs),
            list(engine.outputs),
            engine.max_batch_size,
            engine.row_independent,
        )


class EngineError(RuntimeError):
    """The model failed on a batch; only that batch's requests fail."""


class DeviceLostError(EngineError):
    """The device can no longer be trusted (a hung pipeline stage, a lost context): every
    waiting request fails as retryable and the worker restarts. CUDA's own fatal errors
    are recognised by their text (batch_run.FATAL_MARKERS)."""


class ModelLoadError(RuntimeError):
    """The model could not be loaded; the worker must not become Ready."""


@runtime_checkable
class Engine(Protocol):
    name: str
    version: str
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    max_batch_size: int
    # True when output row i depends only on input row i (so rows can be cached
    # and computed independently: the embedding cache relies on it).
    row_independent: bool

    def run(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Run one batch; raises EngineError on failure."""
        ...

    def warmup(self) -> None:
        """Run every shape the engine will see (and capture graphs) before Ready."""
        ...

    def close(self) -> None: ...
