"""The one interface between the serving layer and whatever runs the model.

The batcher hands an engine a merged batch (every input with the same first
dimension) and gets every output back with that first dimension. ``run`` is
synchronous and called from one thread (the engine core's loop, or the
in-process batcher's engine thread); engines need no locking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from infleet_worker.config import Datatype
from infleet_worker.tensors import Tensor


@dataclass(frozen=True, slots=True)
class Domain:
    """The values an input may hold or an output must hold (checked by the worker)."""

    finite: bool = False  # floats: no NaN / Inf


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Signature entry: per-item shape without the batch dimension (-1 = free)."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    # The client may leave this input out; the model fills in a default.
    optional: bool = False
    domain: Domain | None = None


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

    def finite_outputs(self) -> frozenset[str]:
        """Outputs whose rows must be finite: a row with NaN/Inf fails its request alone."""
        return frozenset(o.name for o in self.outputs if o.domain is not None and o.domain.finite)


class EngineError(RuntimeError):
    """The model failed on a batch; only that batch's requests fail."""


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
