"""A model wrapper that times every fast-path run in the loop, for the OTA health window.

The engine's own histograms time whole ticks since the plugin started; the health window needs
the model's run time alone, before and after a swap, measured where it matters: in the loop.

With one runtime thread the clock is the loop thread's CPU time (CLOCK_THREAD_CPUTIME_ID): the
work the model does, without the time the thread spent preempted or waiting for the GIL, which
on a busy device swamp the tail of a microseconds-long run and would make two models look alike.
With several runtime threads (their work is not on the loop thread's clock) it is wall time.
Wrapping costs two clock reads and one histogram record per run (1-3 us with the CPU clock):
once the update is committed the OTA turns the timing off (`stop_timing`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy.typing as npt

from agent.engine.histogram import Histogram, HistogramSnapshot
from agent.runtime.base import FastPath, FloatArray, Model


class _TimedFastPath(FastPath):
    def __init__(self, inner: FastPath, hist: Histogram, clock: Callable[[], int]) -> None:
        self.inputs = inner.inputs
        self.outputs = inner.outputs
        self._run = inner.run
        self._record = hist.record
        self._clock = clock

    def run(self) -> None:
        """Run the wrapped fast path and record how long it took."""
        clock = self._clock
        t0 = clock()
        self._run()
        self._record(clock() - t0)

    def stop_timing(self) -> None:
        """From the next run on, call the wrapped fast path directly (one atomic store)."""
        # The instance attribute shadows the method: a loop reading `run` sees one or the other.
        vars(self)["run"] = self._run


class TimedModel(Model):
    """`inner` with every fast-path run timed into `hist` (one writer: the loop thread)."""

    def __init__(self, inner: Model, *, cpu_clock: bool = True) -> None:
        self.inner = inner
        self.clock: Callable[[], int] = time.thread_time_ns if cpu_clock else time.perf_counter_ns
        self.name = inner.name
        self.version = inner.version
        self.backend = inner.backend
        self.accelerator = inner.accelerator
        self.path = inner.path
        self.inputs = inner.inputs
        self.outputs = inner.outputs
        self.hist = Histogram()
        self._paths: list[_TimedFastPath] = []

    def infer(self, *arrays: npt.ArrayLike) -> list[FloatArray]:
        """Run the wrapped model once (not timed: only the loop's runs count)."""
        return self.inner.infer(*arrays)

    def bind(self, inputs: Sequence[FloatArray], outputs: Sequence[FloatArray]) -> FastPath:
        """Bind the wrapped model and time its runs."""
        fast = _TimedFastPath(self.inner.bind(inputs, outputs), self.hist, self.clock)
        self._paths.append(fast)
        return fast

    def stop_timing(self) -> None:
        """Stop timing the fast paths bound so far: they run at the wrapped model's own cost.

        The model keeps running where it is; nothing is rebound (rebinding a model that a loop is
        running would invoke its interpreter from two threads at once).
        """
        for fast in self._paths:
            fast.stop_timing()

    def close(self) -> None:
        """Close the wrapped model."""
        self.inner.close()

    def snapshot(self) -> HistogramSnapshot:
        """Run times recorded so far."""
        return self.hist.snapshot()


@dataclass(frozen=True, slots=True)
class Latency:
    """Run-time percentiles of a stretch of runs, in nanoseconds."""

    p50_ns: float
    p99_ns: float
    runs: int


class SlicedLatency:
    """p50 and p99 that one scheduling hiccup cannot move: medians of per-slice percentiles.

    `cut()` closes a slice (the runs since the previous cut); slices with fewer than `min_runs`
    runs are dropped. On a busy machine a single preempted run is the p99 of a short window;
    here it is the p99 of one slice only, and the median slice ignores it.
    """

    def __init__(self, model: TimedModel, *, min_runs: int = 10) -> None:
        self.model = model
        self.min_runs = min_runs
        self.slices: list[tuple[float, float]] = []
        self.runs = 0
        self._prev = model.snapshot()

    def cut(self) -> None:
        """End the current slice."""
        snap = self.model.snapshot()
        prev = self._prev
        part = HistogramSnapshot(
            snap.counts - prev.counts, snap.max_ns, snap.total_ns - prev.total_ns
        )
        self._prev = snap
        if part.count >= self.min_runs:
            self.slices.append((part.percentile_ns(50.0), part.percentile_ns(99.0)))
            self.runs += part.count

    def result(self) -> Latency | None:
        """Median slice p50 and p99, None before any full slice."""
        if not self.slices:
            return None
        return Latency(
            _median([s[0] for s in self.slices]), _median([s[1] for s in self.slices]), self.runs
        )


def _median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def unwrap(model: Model) -> Model:
    """The model inside any TimedModel wrappers."""
    while isinstance(model, TimedModel):
        model = model.inner
    return model
