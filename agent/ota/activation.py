"""Putting a validated model version into the running engine, and taking it out again.

For every running plugin that uses the model: load the new version on the plugin's backend and
the configured accelerator, check it against the plugin's slot and golden vectors; time a fresh
instance of the current version in the loop for a moment (the latency baseline); swap the new
model in between two ticks (EngineControl.swap_model, which also runs the plugin's own
check_model); keep the model that ran before until the update is committed, so a rollback is one
more swap with nothing to load. An isolated plugin (`isolate = true`) holds its model in its own
process: it is handed the version's folder instead, loads and checks it there while it ticks on
(a crash while loading costs only that process), and on a revert reloads the active version.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from agent.config.sections import RuntimeConfig
from agent.engine.api import EngineControl
from agent.errors import EdgeAgentError, ModelError, UpdateRejected
from agent.ota.health import MIN_RUNS, Watched
from agent.ota.timing import Latency, SlicedLatency, TimedModel
from agent.ota.validate import check_shapes, load_candidate, validate_golden
from agent.runtime.base import Model
from agent.runtime.manifest import Manifest

log = logging.getLogger(__name__)

BASELINE_SLICES = 5


def plugins_using(engine: EngineControl, model_name: str) -> list[str]:
    """Running plugins whose model slot holds `model_name`."""
    slots = engine.model_slots()
    return [
        str(p["name"])
        for p in engine.plugins()
        if p.get("model") == model_name and p.get("state") == "running" and p["name"] in slots
    ]


def isolated_using(engine: EngineControl, model_name: str) -> list[str]:
    """Running isolated plugins that run `model_name` (in their own process: no slot here)."""
    return [
        str(p["name"])
        for p in engine.plugins()
        if p.get("model") == model_name and p.get("state") == "running" and p.get("isolated")
    ]


@dataclass
class _PluginSwap:
    plugin: str
    new: TimedModel
    original: Model | None = None
    """What ran before the update; swapped back on rollback, closed on commit."""
    baseline: TimedModel | None = None


@dataclass
class Activation:
    """One model version going into the engine's plugins; `revert` undoes it."""

    engine: EngineControl
    model_name: str
    runtime: RuntimeConfig
    swaps: list[_PluginSwap] = field(default_factory=list)
    isolated: list[str] = field(default_factory=list)
    """Isolated plugins to hand the new version's folder to (see `isolated_using`)."""
    isolated_swapped: list[str] = field(default_factory=list)
    folder: Path | None = None
    swapped: bool = False
    _baseline: dict[str, Latency | None] = field(default_factory=dict)

    def prepare(self, folder: Path, manifest: Manifest) -> int:
        """Load and check the new version once per plugin; return golden vectors passed."""
        slots = self.engine.model_slots()
        self.folder = folder
        self.isolated = isolated_using(self.engine, self.model_name)
        passed = 0
        try:
            for plugin in plugins_using(self.engine, self.model_name):
                slot = slots[plugin]
                model = load_candidate(folder, self.runtime, fmt=slot.model.backend)
                self.swaps.append(_PluginSwap(plugin, self._timed(model)))
                check_shapes(
                    model,
                    [b.shape for b in slot.inputs],
                    [b.shape for b in slot.outputs],
                    f"plugin {plugin}'s model slot",
                )
                passed = validate_golden(model, manifest)
        except BaseException:
            self.close_new()
            raise
        return passed

    def measure_baseline(
        self, current: Path | None, window_s: float, stop: threading.Event
    ) -> None:
        """Run a fresh instance of the current version, timed, in each loop for a moment.

        Only for plugins that tick at least MIN_RUNS times in a health window of `window_s`
        (fewer runs make no latency verdict: raise ota.health_window_s for slow loops), long
        enough for MIN_RUNS runs. Without a baseline (no current folder, or it does not load)
        the latency check is skipped for that plugin: a missing baseline never blocks an update.
        """
        rates = {str(p["name"]): float(p.get("rate_hz") or 0.0) for p in self.engine.plugins()}
        judged = [s for s in self.swaps if rates.get(s.plugin, 0.0) * window_s >= MIN_RUNS]
        for s in self.swaps:
            if s not in judged:
                log.info(
                    "ota: %s: latency not judged (under %d runs in a %g s health window)",
                    s.plugin, MIN_RUNS, window_s,
                )  # fmt: skip
        if current is None or not judged:
            return
        slowest = min(rates[s.plugin] for s in judged)
        # Long enough for MIN_RUNS runs, and like the window itself: the two compare alike.
        seconds = min(max(0.5, 1.5 * MIN_RUNS / slowest, window_s / 2), window_s)
        slots = self.engine.model_slots()
        for s in judged:
            try:
                fresh = load_candidate(current, self.runtime, fmt=slots[s.plugin].model.backend)
            except UpdateRejected as exc:
                log.warning("ota: no latency baseline for %s: %s", s.plugin, exc.reason)
                continue
            timed = self._timed(fresh)
            try:
                s.original = self.engine.swap_model(s.plugin, timed)
            except (EdgeAgentError, TimeoutError) as exc:
                log.warning("ota: no latency baseline for %s: %s", s.plugin, exc)
                fresh.close()
                continue
            s.baseline = timed
        sliced = {s.plugin: SlicedLatency(s.baseline) for s in self.swaps if s.baseline is not None}
        slice_s = seconds / BASELINE_SLICES
        deadline = time.monotonic() + 3 * seconds
        end = time.monotonic() + seconds
        # Slices until the time is up and every plugin ran the model often enough (or 3x longer).
        while not stop.wait(slice_s):
            for p in sliced.values():
                p.cut()
            now = time.monotonic()
            if now >= deadline or (now >= end and all(p.runs >= MIN_RUNS for p in sliced.values())):
                break
        self._baseline = {name: p.result() for name, p in sliced.items()}

    def swap_in(self, timeout: float) -> None:
        """Make the new model the one every plugin runs; UpdateRejected if any plugin refuses."""
        for s in self.swaps:
            try:
                previous = self.engine.swap_model(s.plugin, s.new, timeout=timeout)
            except (EdgeAgentError, TimeoutError) as exc:
                # Plugins already on the new model, and those still on a baseline instance.
                self._swap_back(self.swaps, timeout)
                reason = exc.reason if isinstance(exc, ModelError) else str(exc)
                raise UpdateRejected(
                    f"plugin {s.plugin} refused the model: {reason}", code="incompatible"
                ) from None
            if s.baseline is not None:
                s.baseline.close()  # `previous` is the baseline instance; the original waits
            else:
                s.original = previous
        for plugin in self.isolated:
            try:
                self.engine.swap_model_folder(plugin, self.folder)
            except (EdgeAgentError, TimeoutError) as exc:
                self._swap_back(self.swaps, timeout)
                self._isolated_back()
                raise UpdateRejected(f"{exc}", code="incompatible") from None
            self.isolated_swapped.append(plugin)
        self.swapped = True

    def watched(self) -> list[Watched]:
        """The plugins to watch in the health window, with their latency baseline."""
        slots = self.engine.model_slots()
        out = []
        for s in self.swaps:
            out.append(Watched(s.plugin, slots[s.plugin], s.new, self._baseline.get(s.plugin)))
        return out

    def revert(self, timeout: float = 2.0) -> None:
        """Put back what ran before the update and close the new models."""
        self._swap_back(self.swaps, timeout)
        self._isolated_back()
        self.swapped = False
        self.close_new()

    def commit(self) -> None:
        """Keep the new models (timing off); close the ones they replaced."""
        for s in self.swaps:
            s.new.stop_timing()
            if s.original is not None:
                s.original.close()
                s.original = None

    def _timed(self, model: Model) -> TimedModel:
        return TimedModel(model, cpu_clock=self.runtime.threads == 1)

    def close_new(self) -> None:
        """Close the new models (after a revert, or when they never ran)."""
        for s in self.swaps:
            s.new.close()

    def _isolated_back(self) -> None:
        """Isolated plugins reload the active version (the pointer has not moved yet); one
        that cannot restarts on it anyway, the next time it crashes or is restarted."""
        for plugin in self.isolated_swapped:
            try:
                self.engine.swap_model_folder(plugin, None)
            except (EdgeAgentError, TimeoutError) as exc:
                log.warning("ota: %s keeps its model until it restarts on the active one: %s",
                            plugin, exc)  # fmt: skip
        self.isolated_swapped = []

    def _swap_back(self, swaps: list[_PluginSwap], timeout: float = 2.0) -> None:
        for s in swaps:
            if s.original is None:
                continue
            try:
                replaced = self.engine.swap_model(s.plugin, s.original, timeout=timeout)
            except (EdgeAgentError, TimeoutError):
                log.exception("ota: could not swap the previous model back into %s", s.plugin)
                continue
            if replaced is not s.new:
                replaced.close()  # the baseline instance
            s.original = None
