"""The event loop a worker process runs on: uvloop (libuv, in C) when it is installed,
asyncio's own otherwise. aiohttp's per-request cost falls by about a third on it,
and the gRPC transport's eventfd and answers ride the same loop."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    try:
        import uvloop
    except ImportError:  # an optional speed-up; asyncio serves the same
        return asyncio.run(main)
    return uvloop.run(main)
