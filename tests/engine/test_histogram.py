"""Fixed-bucket histograms: bucket bounds, percentiles against numpy, allocation-free records."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from agent.engine.histogram import MAX_BITS, N_BUCKETS, SUB_BITS, Histogram, bucket_index

REL_WIDTH = 1.0 / (1 << SUB_BITS)


def _filled(values: np.ndarray) -> Histogram:
    hist = Histogram()
    for v in values.tolist():
        hist.record(v)
    return hist


def test_each_value_is_reported_within_its_bucket() -> None:
    rng = np.random.default_rng(1)
    values = [*range(0, 70), *rng.integers(0, 1 << MAX_BITS, 300).tolist()]
    values += [1 << k for k in range(MAX_BITS)]
    for v in values:
        assert 0 <= bucket_index(v) < N_BUCKETS
        hist = Histogram()
        hist.record(v)
        got = hist.snapshot().percentile_ns(50.0)
        assert got <= v  # capped at the max, which is v itself
        assert v - got <= REL_WIDTH * v + 1.0, (v, got)


@pytest.mark.parametrize(
    "values",
    [
        np.random.default_rng(0).lognormal(10, 1, 50_000).astype(np.int64),  # ~20 us typical
        np.random.default_rng(1).integers(100, 5_000_000, 50_000),  # uniform 0.1 us .. 5 ms
        np.random.default_rng(2).exponential(2_000, 50_000).astype(np.int64),  # lateness-like
    ],
    ids=["lognormal", "uniform", "exponential"],
)
def test_percentiles_match_numpy_within_a_bucket(values: np.ndarray) -> None:
    snap = _filled(values).snapshot()
    for q in (50.0, 90.0, 99.0, 99.9):
        want = float(np.percentile(values, q))
        got = snap.percentile_ns(q)
        # A bucket is at most 1/32 of its value wide; allow one bucket either side, plus 1 ns.
        assert abs(got - want) <= 2 * REL_WIDTH * want + 1.0, (q, got, want)
    assert snap.max_ns == int(values.max())
    assert snap.mean_ns() == pytest.approx(float(values.mean()))
    assert snap.count == len(values)


def test_summary_is_in_microseconds_and_capped_at_max() -> None:
    snap = _filled(np.array([1_000, 2_000, 3_000, 1_000_000])).snapshot()
    summary = snap.summary_us()
    assert summary["max"] == 1000.0
    assert summary["p999"] <= summary["max"]
    assert summary["p50"] == pytest.approx(2.0, rel=0.05)


def test_negative_and_huge_values_are_clamped() -> None:
    hist = Histogram()
    hist.record(-5)
    hist.record(1 << 50)
    snap = hist.snapshot()
    assert snap.count == 2
    assert hist.max_ns == (1 << MAX_BITS) - 1
    assert snap.percentile_ns(1.0) == 0.0


def test_empty_histogram_reports_zeros() -> None:
    summary = Histogram().snapshot().summary_us()
    assert summary == {"p50": 0.0, "p99": 0.0, "p999": 0.0, "max": 0.0}


def test_merged_and_reset() -> None:
    a = _filled(np.full(100, 1_000))
    b = _filled(np.full(100, 9_000))
    both = a.snapshot().merged(b.snapshot())
    assert both.count == 200
    assert both.max_ns == 9_000
    a.reset()
    assert a.snapshot().count == 0


def test_record_allocates_nothing() -> None:
    hist = Histogram()
    values = np.random.default_rng(3).integers(0, 10_000_000, 20_000).tolist()
    for v in values[:100]:
        hist.record(v)
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for v in values:
            hist.record(v)
        after = tracemalloc.take_snapshot()
    finally:
        tracemalloc.stop()
    growth = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert growth < 4096, growth
