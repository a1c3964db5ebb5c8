"""The one interface between the serving layer and whatever runs the model.

The batcher hands an engine a merged batch (every input with the same first
dimension) and gets every output back with that first dimension. ``run`` is
synchronous and called from one dedicated thread; engines need no locking.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from infleet_worker.config import Datatype
from infleet_worker.tensors import Tensor


@dataclass(frozen=True, slots=True)
class TensorInfo:
    """Signature entry: per-item shape without the batch dimension (-1 = free)."""

    name: str
    datatype: Datatype
    shape: tuple[int, ...]
    # The client may leave this input out; the model fills in a default.
    optional: bool = False


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
