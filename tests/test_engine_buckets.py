"""Bucket padding logic: pure functions."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from infleet_worker.config import BatchingSpec, EngineSpec, effective_batch_buckets
from infleet_worker.engine.buckets import normalize_buckets, padding_waste, pick_bucket


def test_pick_bucket_smallest_that_fits() -> None:
    buckets = [1, 2, 4, 8]
    assert [pick_bucket(n, buckets) for n in (1, 2, 3, 4, 5, 8)] == [1, 2, 4, 4, 8, 8]
    assert pick_bucket(9, buckets) is None  # outside the buckets: eager
    assert padding_waste(5, buckets) == 3 and padding_waste(9, buckets) == 0


def test_pick_bucket_rejects_empty_batch() -> None:
    with pytest.raises(ValueError):
        pick_bucket(0, [1])


def test_normalize_buckets_includes_max_and_drops_out_of_range() -> None:
    assert normalize_buckets([8, 1, 4, 64], 16) == [1, 4, 8, 16]
    assert normalize_buckets([], 3) == [3]


def test_default_buckets_are_powers_of_two_up_to_max() -> None:
    buckets = effective_batch_buckets(EngineSpec(), BatchingSpec(max_batch_size=24))
    assert normalize_buckets(buckets, 24) == [1, 2, 4, 8, 16, 24]


@given(
    st.lists(st.integers(1, 512), min_size=1, max_size=10, unique=True),
    st.integers(1, 600),
)
def test_bucket_properties(buckets: list[int], n: int) -> None:
    bucket = pick_bucket(n, buckets)
    if bucket is None:
        assert n > max(buckets)
    else:
        assert bucket >= n and bucket in buckets
        assert all(b < n or b >= bucket for b in buckets)  # no smaller bucket fits
