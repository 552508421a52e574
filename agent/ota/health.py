"""The health window: watch a freshly swapped model in the running loops, and say if it is bad.

Signals, all read from off the loops: the plugin failing (its state or restart count changes),
its ticks stopping, a NaN or inf in the slot's output buffers (sampled every few milliseconds),
and the model's in-loop p99 run time against the previous model's, measured the same way just
before the swap (see timing.py), each as the median over a few slices so that one preempted run
on a busy machine decides nothing, and confirmed by the median run time (see _latency_ok).
An isolated plugin's slot is in its own process: for it, the window watches state, restarts
and ticks (a model that crashes the runtime shows there), not its outputs or run times.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from agent.engine.api import EngineControl
from agent.ota.timing import Latency, SlicedLatency, TimedModel
from agent.runtime.slot import ModelSlot

MIN_RUNS = 200
"""Fewer timed runs than this (before or after the swap) make no latency verdict."""
SLICES = 5
"""The window's p50 and p99 are medians over this many slices (see timing.SlicedLatency)."""
MEDIAN_CONFIRM = 1.5
"""A p99 regression counts only if the median rose by this factor too (see _latency_ok)."""


@dataclass
class Watched:
    """One plugin running the new model."""

    plugin: str
    slot: ModelSlot
    model: TimedModel
    baseline: Latency | None = None


@dataclass(frozen=True, slots=True)
class HealthReport:
    """What the window saw: a failure reason (None when healthy) and the figures behind it."""

    reason: str | None
    figures: dict[str, Any]


def _infos(engine: EngineControl) -> dict[str, dict[str, Any]]:
    return {str(p["name"]): p for p in engine.plugins()}


class HealthWindow:
    """Watches plugins for `window_s` after a swap; `run` returns the first problem seen."""

    def __init__(
        self,
        engine: EngineControl,
        watched: list[Watched],
        *,
        window_s: float,
        latency_regression: float,
        isolated: list[str] | None = None,
        sample_s: float = 0.005,
    ) -> None:
        self.engine = engine
        self.watched = watched
        self.isolated = isolated or []
        """Isolated plugins on the new model: their slot is in their own process, so only
        their state, restarts and ticks are watched from here."""
        self._names = [w.plugin for w in watched] + self.isolated
        self.window_s = window_s
        self.latency_regression = latency_regression
        self.sample_s = sample_s
        self._sliced: dict[str, SlicedLatency] = {}

    def run(self, stop: threading.Event) -> HealthReport:
        """Block for the window (or until `stop`); a report with reason None means healthy."""
        before = _infos(self.engine)
        ticks0 = self.engine.tick_counters()
        self._sliced = {w.plugin: SlicedLatency(w.model) for w in self.watched}
        start = time.monotonic()
        end = start + self.window_s
        slice_s = self.window_s / SLICES
        next_info, next_cut = 0.0, start + slice_s
        while time.monotonic() < end:
            if stop.wait(self.sample_s):
                return HealthReport("update cancelled during the health window", {})
            reason = self._outputs_finite()
            now = time.monotonic()
            if reason is None and now >= next_info:
                next_info = now + 0.05
                reason = self._plugins_ok(before)
            if now >= next_cut:
                next_cut += slice_s
                for sliced in self._sliced.values():
                    sliced.cut()
            if reason is not None:
                return HealthReport(reason, self.figures())
        reason = self._ticked(ticks0) or self._latency_ok()
        return HealthReport(reason, self.figures())

    def _outputs_finite(self) -> str | None:
        for w in self.watched:
            for k, buf in enumerate(w.slot.outputs):
                if not np.isfinite(buf).all():
                    return f"plugin {w.plugin}: model output {k} became NaN or inf"
        return None

    def _plugins_ok(self, before: dict[str, dict[str, Any]]) -> str | None:
        now = _infos(self.engine)
        for name in self._names:
            info, old = now.get(name), before.get(name, {})
            if info is None:
                return f"plugin {name} disappeared"
            if info.get("state") != "running" or info.get("restarts") != old.get("restarts"):
                err = info.get("last_error") or info.get("state")
                return f"plugin {name} failed with the new model: {err}"
        return None

    def _ticked(self, ticks0: dict[str, int]) -> str | None:
        ticks = self.engine.tick_counters()
        for name in self._names:
            if ticks.get(name, 0) <= ticks0.get(name, 0):
                return f"plugin {name} did not tick during the health window"
        return None

    def _latency_ok(self) -> str | None:
        """A model is slower when its p99 exceeds the previous model's by the configured factor.

        A neural network's work per run is fixed, so a slower model shifts the whole
        distribution: a p99 that rose while the median stayed put is the machine's load (other
        processes, cache pressure) during the window, and does not roll a good model back. The
        other way round, a median that rose by the factor itself is a slower model even when the
        previous model's p99 was inflated by load while its baseline was taken.
        """
        for w in self.watched:
            sliced = self._sliced.get(w.plugin)
            now = sliced.result() if sliced is not None else None
            base = w.baseline
            if now is None or base is None or now.runs < MIN_RUNS or base.runs < MIN_RUNS:
                continue
            if base.p99_ns <= 0 or base.p50_ns <= 0:
                continue
            ratio, median_ratio = now.p99_ns / base.p99_ns, now.p50_ns / base.p50_ns
            factor = self.latency_regression
            if (ratio > factor and median_ratio > MEDIAN_CONFIRM) or median_ratio > factor:
                return (
                    f"plugin {w.plugin}: p99 run time {now.p99_ns / 1e3:.1f} us is "
                    f"{ratio:.1f}x the previous model's {base.p99_ns / 1e3:.1f} us "
                    f"(limit {factor:g}x; median {median_ratio:.1f}x)"
                )
        return None

    def figures(self) -> dict[str, Any]:
        """Per plugin: runs timed, p50 and p99 now and before, in microseconds."""
        out: dict[str, Any] = {}
        for w in self.watched:
            sliced = self._sliced.get(w.plugin)
            now = sliced.result() if sliced is not None else None
            base = w.baseline
            out[w.plugin] = {
                "runs": w.model.snapshot().count,
                "p50_us": _us(now.p50_ns if now else None),
                "p99_us": _us(now.p99_ns if now else None),
                "baseline_p50_us": _us(base.p50_ns if base else None),
                "baseline_p99_us": _us(base.p99_ns if base else None),
            }
        return out


def _us(ns: float | None) -> float | None:
    return round(ns / 1e3, 2) if ns is not None else None
