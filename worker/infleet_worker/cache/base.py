"""What the request path needs from a cache; implementations live beside this file.

The request path is: decode -> ``lookup`` -> (batcher -> engine for the misses)
-> ``complete`` -> respond. An output cache answers all or nothing; an embedding
cache may answer some rows and ask for the rest to be computed.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from infleet_worker.tensors import InferRequest, InferResult, Tensor


@dataclass(slots=True)
class CacheLookup:
    """What the cache knew about one request.

    - ``result`` set: a full hit; answer it and skip the batcher.
    - else ``to_compute`` is the request to run (all rows, or only the missing
      rows), and ``complete`` merges its outputs with ``hit_rows`` back into the
      original row order.
    """

    result: InferResult | None = None
    to_compute: InferRequest | None = None
    hit_rows: dict[int, dict[str, Tensor]] = field(default_factory=dict)
    state: object = None  # implementation-private (keys, row map)


class ResultCache(Protocol):
    async def lookup(self, request: InferRequest) -> CacheLookup:
        """Never raises: a Redis failure is a miss (fail open), counted in metrics."""
        ...

    async def complete(
        self, request: InferRequest, lookup: CacheLookup, computed: InferResult
    ) -> InferResult:
        """Merge computed rows with cached ones, store the new entries, return the answer.

        Storing is best effort and never raises."""
        ...

    async def close(self) -> None: ...
