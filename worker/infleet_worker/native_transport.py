"""The compiled transport (``infleet_transport``, worker/native), when it is built.

``make test``/``make demo`` build it (scripts/build_native.sh); without it the worker
serves HTTP on aiohttp and gRPC on grpcio (server.transport ``auto``)."""

from __future__ import annotations

try:
    import infleet_transport as native
except ImportError:  # not built
    native = None  # type: ignore[assignment]


def available() -> bool:
    return native is not None
