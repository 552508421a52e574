"""Fixed-bucket, allocation-free histograms of nanosecond durations (tick time, lateness).

Buckets are log-spaced with linear sub-buckets, as in HdrHistogram: values below 2**SUB_BITS ns
get one bucket each; above, every power of two is split into 2**SUB_BITS equal buckets, so a
bucket is at most 1/32 (3.1 %) of its value wide. The index comes from `int.bit_length()` and two
shifts: no float, no log(), no new container per record. Counts live in a numpy int64 array,
written through a memoryview of it (half the cost of numpy scalar indexing on the hot path).

One writer (the loop thread) records; any thread may read a snapshot. A reader may see a record
half done (count bumped, max not yet), which is harmless for statistics.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

SUB_BITS = 5
"""2**SUB_BITS sub-buckets per power of two."""
MAX_BITS = 37
"""Largest tracked value is 2**MAX_BITS - 1 ns (about 137 s); above, values are clamped."""

_SUB = 1 << SUB_BITS
_MAX_VALUE = (1 << MAX_BITS) - 1
N_BUCKETS = (MAX_BITS - SUB_BITS + 1) << SUB_BITS


def bucket_index(value_ns: int) -> int:
    """The bucket of a (non-negative, clamped) value."""
    bits = value_ns.bit_length()
    if bits <= SUB_BITS:
        return value_ns
    shift = bits - SUB_BITS - 1
    return (shift << SUB_BITS) + (value_ns >> shift)


def _bucket_bounds() -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Lowest value and width of every bucket."""
    low = np.zeros(N_BUCKETS, np.float64)
    width = np.ones(N_BUCKETS, np.float64)
    for i in range(N_BUCKETS):
        if i < 2 * _SUB:
            low[i] = i
            continue
        shift = (i >> SUB_BITS) - 1
        low[i] = float(((i & (_SUB - 1)) + _SUB) << shift)
        width[i] = float(1 << shift)
    return low, width


_LOW, _WIDTH = _bucket_bounds()


class Histogram:
    """Counts of durations in ns; `record` is the hot path (about 0.2 us, allocates nothing)."""

    __slots__ = ("_cells", "count", "counts", "max_ns", "total_ns")

    def __init__(self) -> None:
        self.counts: npt.NDArray[np.int64] = np.zeros(N_BUCKETS, np.int64)
        self._cells = self.counts.data
        self.count = 0
        self.max_ns = 0
        self.total_ns = 0

    def record(self, value_ns: int) -> None:
        """Add one duration (negative values count as 0, huge ones are clamped)."""
        if value_ns < 0:
            value_ns = 0
        elif value_ns > _MAX_VALUE:
            value_ns = _MAX_VALUE
        bits = value_ns.bit_length()
        if bits <= SUB_BITS:
            self._cells[value_ns] += 1
        else:
            shift = bits - SUB_BITS - 1
            self._cells[(shift << SUB_BITS) + (value_ns >> shift)] += 1
        self.count += 1
        self.total_ns += value_ns
        if value_ns > self.max_ns:
            self.max_ns = value_ns

    def reset(self) -> None:
        """Forget every record (call from the writer's thread, or while it is stopped)."""
        self.counts.fill(0)
        self.count = 0
        self.max_ns = 0
        self.total_ns = 0

    def snapshot(self) -> HistogramSnapshot:
        """A consistent-enough copy to compute percentiles from, off the hot path."""
        return HistogramSnapshot(self.counts.copy(), self.max_ns, self.total_ns)


class HistogramSnapshot:
    """A frozen copy of a histogram's counts, with percentile queries."""

    def __init__(self, counts: npt.NDArray[np.int64], max_ns: int, total_ns: int) -> None:
        self.counts = counts
        self.max_ns = max_ns
        self.total_ns = total_ns
        self.count = int(counts.sum())
        self._cumulative = np.cumsum(counts)

    def percentile_ns(self, q: float) -> float:
        """The value below which `q` percent of records fall (bucket midpoint, capped at max)."""
        if self.count == 0:
            return 0.0
        rank = q / 100.0 * self.count
        i = int(np.searchsorted(self._cumulative, max(rank, 1.0), side="left"))
        i = min(i, N_BUCKETS - 1)
        value = _LOW[i] + (_WIDTH[i] - 1.0) / 2.0
        return float(min(value, float(self.max_ns)))

    def mean_ns(self) -> float:
        """Mean of the recorded values (exact, not from buckets)."""
        return self.total_ns / self.count if self.count else 0.0

    def summary_us(self) -> dict[str, Any]:
        """p50, p99, p99.9 and max in microseconds, rounded for reports."""
        return {
            "p50": round(self.percentile_ns(50.0) / 1e3, 2),
            "p99": round(self.percentile_ns(99.0) / 1e3, 2),
            "p999": round(self.percentile_ns(99.9) / 1e3, 2),
            "max": round(self.max_ns / 1e3, 2),
        }

    def merged(self, other: HistogramSnapshot) -> HistogramSnapshot:
        """The snapshot of both sets of records together."""
        return HistogramSnapshot(
            self.counts + other.counts,
            max(self.max_ns, other.max_ns),
            self.total_ns + other.total_ns,
        )
