"""In-memory request/response types shared by protocol, batcher, cache and engine.

Tensors travel as numpy arrays with their Triton datatype beside them, because
numpy has no bfloat16: a BF16 tensor is held as its raw ``uint16`` bit pattern
and labelled ``"BF16"``. BYTES tensors are numpy ``object`` arrays of ``bytes``.
The first dimension of every tensor is the batch dimension.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from infleet_worker.config import Datatype

# Triton datatype -> numpy dtype of the in-memory array.
NUMPY_DTYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BF16": np.dtype(np.uint16),  # raw bfloat16 bits
    "BYTES": np.dtype(np.object_),
}


@dataclass(frozen=True, slots=True)
class Tensor:
    """A named-elsewhere tensor: Triton datatype plus its numpy array (batch first)."""

    datatype: Datatype
    array: np.ndarray

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.array.shape)

    @property
    def batch(self) -> int:
        return int(self.array.shape[0]) if self.array.ndim else 1


@dataclass(slots=True)
class InferRequest:
    """One decoded inference request, independent of HTTP or gRPC."""

    model_name: str
    model_version: str
    inputs: dict[str, Tensor]
    request_id: str = ""
    requested_outputs: list[str] | None = None  # None = all outputs
    priority: int = 0  # 0 = the model's default level; 1 is highest
    timeout_us: int | None = None  # None = the model's default
    parameters: dict[str, Any] = field(default_factory=dict)

    @property
    def batch(self) -> int:
        return next(iter(self.inputs.values())).batch if self.inputs else 0


@dataclass(slots=True)
class InferResult:
    """Outputs of one request, in the order the client asked for them."""

    outputs: dict[str, Tensor]
    cached: bool = False
    # Outputs may be views into shared memory (core/arena.py): the protocol layer
    # calls this once it has encoded them, and must not touch them after.
    release: Callable[[], None] | None = None

    def done(self) -> None:
        if self.release is not None:
            self.release()
            self.release = None
