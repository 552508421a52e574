"""One configured plugin under supervision: its resources, its loop and its restart policy.

The runner owns what outlives a plugin instance (model slot, devices, output channel, params,
rate, histograms) and what a restart replaces (the plugin instance and its loop). It is the one
owner of the plugin's params and rate in force: `apply` changes them, and hands them to the loop
and the plugin in one mail between two ticks (the loop's period and `ctx.rate_hz` are copies
written only there). Control calls from any thread are serialized by the runner's lock, which the
loop thread never takes; whatever must happen between two ticks goes through the loop's mailbox.

A restart reuses the model slot: a crash storm never reloads a model. Crashes come in episodes
(agent/engine/crashes.py); the backoff resets when one ends, while `crashes` and `restarts`
(status and metrics) and `last_error` (status) stay exact.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from agent.config.sections import EngineConfig
from agent.engine.crashes import CrashEpisodes
from agent.engine.histogram import Histogram
from agent.engine.loop import Loop
from agent.engine.resources import LoopOptions, RunnerResources
from agent.engine.supervisor import FIRST_TICK_GRACE_S, MIN_RATE_HZ, Backoff, OverrunWatch
from agent.errors import ModelError, PluginError
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.runtime.base import Model

log = logging.getLogger(__name__)


class PluginRunner:
    """Starts, stops, restarts and reconfigures one plugin; reports its state and statistics."""

    def __init__(
        self,
        name: str,
        cls: type[Plugin],
        *,
        params: PluginParams,
        rate_hz: float,
        resources: RunnerResources,
        options: LoopOptions,
        engine: EngineConfig,
        stable_s: float = 30.0,
        overrun_window_s: float = 2.0,
    ) -> None:
        self.name = name
        self.cls = cls
        self._params = params
        self._rate_hz = rate_hz
        self.res = resources
        self.options = options
        self.engine = engine
        self.state = "stopped"
        self.restarts = 0
        self.last_error: str | None = None
        self.overrun_reports = 0
        self.rate_reductions = 0
        self.overrunning = False
        self.tick_hist = Histogram()
        self.late_hist = Histogram()
        self._lock = threading.RLock()
        self._plugin: Plugin | None = None
        self._ctx: PluginContext | None = None
        self._loop: Loop | None = None
        self._retired = [0, 0, 0]  # ticks, overruns, skipped of loops that ended
        self._backoff = Backoff(
            engine.restart_backoff_s, engine.restart_backoff_max_s, stable_s=stable_s
        )
        self._watch = OverrunWatch(engine.overrun_report_ratio, window_s=overrun_window_s)
        self._restart_at = 0.0
        self._started_at = 0.0
        self._crashes = CrashEpisodes()

    @property
    def params(self) -> PluginParams:
        """The params in force (kept for restarts); changed only through `apply`."""
        return self._params

    @property
    def rate_hz(self) -> float:
        """The rate in force (maybe reduced for overruns); changed only through `apply`."""
        return self._rate_hz

    # --- lifecycle ------------------------------------------------------------------------------

    def setup(self) -> None:
        """Create a fresh plugin instance and run its setup (not ticking yet)."""
        with self._lock:
            plugin = self.cls()
            self._ctx = ctx = PluginContext(
                name=self.name,
                rate_hz=self._rate_hz,
                params=self._params,
                model=self.res.slot,
                sensors=self.res.sensors,
                actuators=self.res.actuators,
                out=self.res.channel,
            )
            try:
                plugin.setup(ctx)
            except Exception as exc:
                _quiet_teardown(self.name, plugin)
                raise PluginError(f"plugin {self.name!r}: setup failed: {exc!r}") from exc
            self._plugin = plugin

    def launch(self) -> None:
        """Start ticking the set-up plugin on a new loop thread."""
        with self._lock:
            if self._plugin is None:
                raise PluginError(f"plugin {self.name!r}: launch before setup")
            self._loop = Loop(
                self.name,
                self._plugin.tick,
                rate_hz=self._rate_hz,
                spin_us=self.engine.spin_us,
                collector=self.options.collector,
                cpu_affinity=self.options.cpu_affinity,
                realtime_priority=self.options.realtime_priority,
                wait=self.options.wait,
                tick_hist=self.tick_hist,
                late_hist=self.late_hist,
            )
            self._loop.start()
            self.state = "running"
            self._started_at = time.monotonic()
            self._watch.restart()

    def start(self) -> None:
        """Set up and launch, unless already running; PluginError if setup fails."""
        with self._lock:
            if self.state == "running":
                return
            self.setup()
            self.launch()
            self.last_error = None

    def request_stop(self) -> None:
        """Ask the loop to end (returns at once; `stop` finishes the job)."""
        loop = self._loop
        if loop is not None:
            loop.stop()

    def stop(self, timeout: float = 1.0) -> bool:
        """Stop the loop and tear the plugin down; False if the loop did not end in time."""
        with self._lock:
            ended = self._end_loop(timeout)
            if self._plugin is not None and ended:
                _quiet_teardown(self.name, self._plugin)
            self._plugin = None  # a stuck tick keeps its instance; a restart gets a fresh one
            self.state = "stopped"
            return ended

    def close(self) -> None:
        """Release what outlives a stop (an isolated runner's shared memory; nothing here)."""

    def restart(self, timeout: float = 1.0) -> None:
        """Stop, then start with a fresh instance and setup."""
        with self._lock:
            self.stop(timeout)
            self.start()
            self.restarts += 1

    # --- changes between ticks -------------------------------------------------------------------

    def post(self, fn: Callable[[], Any], timeout: float = 2.0) -> Any:
        """Run `fn` between two ticks on the loop thread (here, when not ticking)."""
        with self._lock:
            loop = self._loop
            if loop is not None and loop.alive:
                return loop.post(fn, timeout)
            return fn()

    def apply(
        self,
        *,
        params: PluginParams | None = None,
        rate_hz: float | None = None,
        timeout: float = 2.0,
    ) -> None:
        """Make `params` and/or `rate_hz` the ones in force, handed to a running plugin and its
        loop in one mail between two ticks; a stopped plugin gets them at its next setup."""
        with self._lock:
            plugin, ctx, loop = self._plugin, self._ctx, self._loop
            new_params = params if params is not None else self._params
            new_rate = rate_hz if rate_hz is not None else self._rate_hz

            def between_ticks() -> None:
                # The plugin first: if it refuses the params, nothing else has changed.
                if plugin is not None and params is not None:
                    plugin.apply_params(params)
                if ctx is not None:  # a plugin reading ctx sees the new values from now on
                    ctx.params, ctx.rate_hz = new_params, new_rate
                if loop is not None and rate_hz is not None:
                    loop.set_rate(rate_hz)  # on the loop thread: applied at once, no mail

            self.post(between_ticks, timeout)
            self._params, self._rate_hz = new_params, new_rate
            if rate_hz is not None:
                self._watch.restart()

    def reconfigure(self, engine: EngineConfig, options: LoopOptions | None = None) -> None:
        """Engine settings and loop options for loops started from now on."""
        with self._lock:
            self.engine = engine
            if options is not None:
                options.collector = self.options.collector
                self.options = options

    def swap_model(self, model: Model, timeout: float = 2.0, *, name: str | None = None) -> Model:
        """Bind `model` to the slot off the loop, check it, activate it between two ticks;
        `name` (when given) is the model name it now runs under."""
        with self._lock:
            slot = self.res.slot
            if slot is None:
                raise PluginError(f"plugin {self.name!r} has no model slot")
            if model is slot.model:
                # Rebinding the running model would invoke one interpreter from two threads.
                raise ModelError("model is already active in this slot", path=model.path)
            fast = slot.prepare(model)
            if self._plugin is not None:
                self._plugin.check_model(model)
            old: Model = self.post(lambda: slot.activate(model, fast), timeout)
            if name is not None:
                self.res.model_name = name
            return old

    # --- supervision -----------------------------------------------------------------------------

    def supervise(self, now: float) -> None:
        """Restart after a failed tick (with backoff); report, maybe slow, a chronic overrunner."""
        with self._lock:
            if self.state == "running":
                self._check_running(now)
            elif self.state == "backoff" and now >= self._restart_at:
                self._try_restart(now)

    def _check_running(self, now: float) -> None:
        loop = self._loop
        if loop is None:
            return
        if loop.error is not None and not loop.alive:
            error = loop.error
            # Dropping the loop's reference frees the dead loop, the exception, its frames and
            # the crashed plugin instance at once, instead of leaving a cycle to the collector.
            loop.error = None
            self._fail(now, error)
            return
        if self._backoff.running_since(self._started_at, now) and self._crashes.in_episode:
            log.info(
                "plugin %s: stable again after %d crashes (restart %d); backoff reset",
                self.name, self._crashes.in_episode, self.restarts,
            )  # fmt: skip
            self._crashes.end()
        verdict = self._watch.update(now, loop.ticks, loop.overruns)
        if verdict is None:
            return
        if verdict and not self.overrunning:
            self.overrun_reports += 1
            log.warning(
                "plugin %s keeps overrunning: %.1f %% of its ticks in the last %.0f s missed "
                "%g Hz deadlines (a recent window, not the share since start)",
                self.name, self._watch.share * 100, self._watch.window_s, self._rate_hz,
            )  # fmt: skip
        self.overrunning = verdict
        if verdict and self.engine.overrun_reduce_rate:
            self._reduce_rate()

    def _reduce_rate(self) -> None:
        new_rate = max(self._rate_hz / 2.0, MIN_RATE_HZ)
        if new_rate >= self._rate_hz:
            return
        log.warning(
            "plugin %s: rate reduced from %g Hz to %g Hz (engine.overrun_reduce_rate)",
            self.name, self._rate_hz, new_rate,
        )  # fmt: skip
        self.apply(rate_hz=new_rate)
        self.rate_reductions += 1

    def _fail(self, now: float, error: BaseException) -> None:
        self._end_loop(0.0)
        if self._plugin is not None:
            _quiet_teardown(self.name, self._plugin)
            self._plugin = None
        self.last_error = f"{type(error).__name__}: {error}"
        delay = self._backoff.next_delay()
        self._restart_at = now + delay
        self.state = "backoff"
        self._crashes.record(
            self.res.channel, error, phase="tick", message=self.last_error, delay=delay,
            restarts=self.restarts,
        )  # fmt: skip

    def _try_restart(self, now: float) -> None:
        try:
            self.setup()
        except PluginError as exc:
            self.last_error = str(exc)
            delay = self._backoff.next_delay()
            self._restart_at = now + delay
            self._crashes.record(
                self.res.channel, exc.__cause__ or exc, phase="setup", message=self.last_error,
                delay=delay, restarts=self.restarts,
            )  # fmt: skip
            return
        self.launch()
        self.restarts += 1
        # One line per crash is enough: within an episode the restart itself is routine.
        level = logging.INFO if self._crashes.in_episode <= 1 else logging.DEBUG
        log.log(level, "plugin %s restarted (restart %d)", self.name, self.restarts)

    def _end_loop(self, timeout: float) -> bool:
        loop = self._loop
        if loop is None:
            return True
        loop.stop()
        ended = loop.join(timeout)
        if not ended:
            log.error("plugin %s: loop did not stop within %.1f s", self.name, timeout)
        self._retired[0] += loop.ticks
        self._retired[1] += loop.overruns
        self._retired[2] += loop.skipped
        self._loop = None
        return ended

    # --- reporting -------------------------------------------------------------------------------

    @property
    def ready(self) -> bool:
        """True once the running loop has ticked."""
        loop = self._loop
        return loop is not None and loop.ticks > 0

    @property
    def ticking(self) -> bool:
        """True while the plugin runs on a live loop that has ticked (or had time to).

        A loop that ended with an error, or a plugin in backoff, is the supervisor's to restart;
        only a live loop whose tick counter stands still is stuck (what the watchdog catches).
        Once a fresh loop has ticked, the counter is past anything its predecessor reached.
        """
        loop = self._loop
        if self.state != "running" or loop is None or not loop.alive:
            return False
        return loop.ticks > 0 or time.monotonic() - self._started_at >= FIRST_TICK_GRACE_S

    def counters(self) -> tuple[int, int, int]:
        """(ticks, overruns, skipped) since the runner was created."""
        loop = self._loop
        live = (loop.ticks, loop.overruns, loop.skipped) if loop is not None else (0, 0, 0)
        return (
            self._retired[0] + live[0],
            self._retired[1] + live[1],
            self._retired[2] + live[2],
        )

    def info(self) -> dict[str, Any]:
        """Name, state, rates, model, counters and the last error."""
        slot = self.res.slot
        return {
            "name": self.name,
            **self._counts(),
            "model": self.res.model_name,
            "model_version": slot.model.version if slot is not None else None,
            "last_error": self.last_error,
            "overrunning": self.overrunning,
            "rate_reductions": self.rate_reductions,
        }

    def stats(self) -> dict[str, Any]:
        """Tick time and lateness percentiles in microseconds, with the counters."""
        return {
            "tick_us": self.tick_hist.snapshot().summary_us(),
            "lateness_us": self.late_hist.snapshot().summary_us(),
            **self._counts(),
        }

    def _counts(self) -> dict[str, Any]:
        ticks, overruns, skipped = self.counters()
        return {
            "state": self.state,
            "rate_hz": self._rate_hz,
            "ticks": ticks,
            "overruns": overruns,
            "skipped": skipped,
            "restarts": self.restarts,
            "crashes": self._crashes.total,
        }


def _quiet_teardown(name: str, plugin: Plugin) -> None:
    try:
        plugin.teardown()
    except Exception:  # teardown of a broken plugin must not block its restart
        log.exception("plugin %s: teardown failed", name)
