"""The garbage collector of a long-running serving process."""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Move everything loaded so far (torch, the model, the codecs) out of the
    collector's sight, once start-up is done: a full collection then walks only what
    serving allocates, instead of stalling the process for tens of milliseconds every
    few thousand requests (the p99 of a one-row request)."""
    gc.collect()
    gc.freeze()
