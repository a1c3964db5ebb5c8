"""Batch-size buckets: pure functions, no torch.

CUDA graphs are captured for a fixed set of padded batch sizes; a batch of ``n`` rows
runs in the smallest bucket >= n and its outputs are sliced back to ``n`` rows.
"""

from __future__ import annotations

from collections.abc import Sequence


def pick_bucket(n: int, buckets: Sequence[int]) -> int | None:
    """The smallest bucket that holds ``n`` rows, or None when ``n`` exceeds them all."""
    if n < 1:
        raise ValueError(f"batch size must be >= 1, got {n}")
    for bucket in sorted(buckets):
        if bucket >= n:
            return bucket
    return None


def padding_waste(n: int, buckets: Sequence[int]) -> int:
    """Rows computed for nothing when ``n`` rows run padded (0 when they run eager)."""
    bucket = pick_bucket(n, buckets)
    return 0 if bucket is None else bucket - n


def normalize_buckets(buckets: Sequence[int], max_batch_size: int) -> list[int]:
    """Sorted, unique, within [1, max_batch_size]; max_batch_size always included."""
    kept = {b for b in buckets if 1 <= b <= max_batch_size}
    kept.add(max_batch_size)
    return sorted(kept)
