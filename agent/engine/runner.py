"""One configured plugin under supervision: its resources, its loop and its restart policy.

The runner owns what outlives a plugin instance (model slot, devices, output channel, params,
histograms) and what a restart replaces (the plugin instance and its loop). Control calls from
any thread are serialized by the runner's lock, which the loop thread never takes; whatever must
happen between two ticks goes through the loop's mailbox.

A restart reuses the model slot: a crash storm never reloads a model (no native memory per
restart). Failures come in episodes: an episode starts with a crash and ends once the plugin has
run `stable_s` without one (the backoff resets then). Within an episode the log gets the full
traceback once per failure site and one line per further crash, and a `plugin_failed` event goes
out on the 1st, 2nd, 4th, 8th, ... crash, so a storm of any length stays a few lines and events
while `crashes` and `restarts` (status and metrics) and `last_error` (status) keep it exact.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from agent.config.sections import EngineConfig
from agent.engine.gc_slack import SlackCollector
from agent.engine.histogram import Histogram
from agent.engine.loop import Loop
from agent.engine.supervisor import Backoff, OverrunWatch
from agent.errors import ModelError, PluginError
from agent.hal.base import Actuator, Sensor
from agent.plugin.base import Plugin, PluginContext, PluginParams
from agent.plugin.channel import OutputChannel
from agent.runtime.base import Model
from agent.runtime.slot import ModelSlot

log = logging.getLogger(__name__)

MIN_RATE_HZ = 0.1
"""Overrun rate reduction never goes below this."""
FIRST_TICK_GRACE_S = 1.0
"""A fresh loop is not judged stuck before its first tick until it has run this long: after a
restart, the new loop's counter may still equal what the crashed one had reached."""
FAILED_EVENT = "plugin_failed"
"""Event kind the host raises on the plugin's own channel when it crashes (tick or setup)."""

FailureSite = tuple[str, str, int]
"""Exception type, file and line where it was raised: what makes a traceback worth logging."""


@dataclass
class RunnerResources:
    """What the host built for a plugin once: kept across restarts."""

    slot: ModelSlot | None
    sensors: dict[str, Sensor]
    actuators: dict[str, Actuator]
    channel: OutputChannel
    model_name: str | None = None


@dataclass
class LoopOptions:
    """How this plugin's loop runs."""

    rate_hz: float
    cpu_affinity: list[int] | None = None
    realtime_priority: int | None = None
    collector: SlackCollector | None = None


class PluginRunner:
    """Starts, stops, restarts and reconfigures one plugin; reports its state and statistics."""

    def __init__(
        self,
        name: str,
        cls: type[Plugin],
        *,
        params: PluginParams,
        resources: RunnerResources,
        options: LoopOptions,
        engine: EngineConfig,
        stable_s: float = 30.0,
        overrun_window_s: float = 2.0,
    ) -> None:
        self.name = name
        self.cls = cls
        self.params = params
        self.res = resources
        self.options = options
        self.configured_rate_hz = options.rate_hz
        self.engine = engine
        self.state = "stopped"
        self.restarts = 0
        self.crashes = 0
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
        self._episode_crashes = 0
        self._traced: set[FailureSite] = set()

    # --- lifecycle ------------------------------------------------------------------------------

    def setup(self) -> None:
        """Create a fresh plugin instance and run its setup (not ticking yet)."""
        with self._lock:
            plugin = self.cls()
            self._ctx = ctx = PluginContext(
                name=self.name,
                rate_hz=self.options.rate_hz,
                params=self.params,
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
                rate_hz=self.options.rate_hz,
                spin_us=self.engine.spin_us,
                collector=self.options.collector,
                cpu_affinity=self.options.cpu_affinity,
                realtime_priority=self.options.realtime_priority,
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

    def set_params(self, params: PluginParams, timeout: float = 2.0) -> None:
        """Hand validated params to the plugin between two ticks; kept for later restarts."""
        with self._lock:
            plugin = self._plugin
            if plugin is not None:
                self.post(lambda: plugin.apply_params(params), timeout)
            self.params = params

    def set_rate(self, rate_hz: float, timeout: float = 2.0) -> None:
        """Tick at `rate_hz` from the next deadline on."""
        with self._lock:
            ctx = self._ctx
            loop = self._loop

            def tell_plugin() -> None:
                # A plugin that reads ctx.rate_hz sees the new rate from the same tick on.
                if ctx is not None:
                    ctx.rate_hz = rate_hz

            if loop is not None and loop.alive:
                loop.set_rate(rate_hz, timeout, also=tell_plugin)
            else:
                tell_plugin()
            self.options.rate_hz = rate_hz
            self._watch.restart()

    def swap_model(self, model: Model, timeout: float = 2.0) -> Model:
        """Bind `model` to the slot off the loop, check it, activate it between two ticks."""
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
        if self._backoff.running_since(self._started_at, now) and self._episode_crashes:
            log.info(
                "plugin %s: stable again after %d crashes (restart %d); backoff reset",
                self.name, self._episode_crashes, self.restarts,
            )  # fmt: skip
            self._episode_crashes = 0
            self._traced.clear()
        verdict = self._watch.update(now, loop.ticks, loop.overruns)
        if verdict is None:
            return
        if verdict and not self.overrunning:
            self.overrun_reports += 1
            log.warning(
                "plugin %s keeps overrunning: %.1f %% of ticks over %.0f Hz deadlines",
                self.name, self._watch.share * 100, self.options.rate_hz,
            )  # fmt: skip
        self.overrunning = verdict
        if verdict and self.engine.overrun_reduce_rate:
            self._reduce_rate()

    def _reduce_rate(self) -> None:
        new_rate = max(self.options.rate_hz / 2.0, MIN_RATE_HZ)
        if new_rate >= self.options.rate_hz:
            return
        log.warning(
            "plugin %s: rate reduced from %g Hz to %g Hz (engine.overrun_reduce_rate)",
            self.name, self.options.rate_hz, new_rate,
        )  # fmt: skip
        self.set_rate(new_rate)
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
        n = self._count_crash()
        exc_info = self._trace_once(error)
        if exc_info is not None:  # always so for the first crash of an episode
            log.error(
                "plugin %s: tick raised %s; restarting in %.2f s",
                self.name, self.last_error, delay, exc_info=exc_info,
            )  # fmt: skip
        else:
            log.error(
                "plugin %s: tick raised %s (crash %d in a row); restarting in %.2f s",
                self.name, self.last_error, n, delay,
            )  # fmt: skip
        self._report_failure("tick", delay)

    def _try_restart(self, now: float) -> None:
        try:
            self.setup()
        except PluginError as exc:
            self.last_error = str(exc)
            delay = self._backoff.next_delay()
            self._restart_at = now + delay
            n = self._count_crash()
            exc_info = self._trace_once(exc.__cause__ or exc)
            log.error(
                "plugin %s: %s (crash %d in a row); next try in %.2f s",
                self.name, exc, n, delay, exc_info=exc_info,
            )  # fmt: skip
            self._report_failure("setup", delay)
            return
        self.launch()
        self.restarts += 1
        # One line per crash is enough: within an episode the restart itself is routine.
        level = logging.INFO if self._episode_crashes <= 1 else logging.DEBUG
        log.log(level, "plugin %s restarted (restart %d)", self.name, self.restarts)

    def _count_crash(self) -> int:
        self.crashes += 1
        self._episode_crashes += 1
        return self._episode_crashes

    def _trace_once(
        self, error: BaseException
    ) -> tuple[type[BaseException], BaseException, TracebackType | None] | None:
        """exc_info for the log the first time this episode fails at this place, else None."""
        site = failure_site(error)
        if site in self._traced:
            return None
        self._traced.add(site)
        return (type(error), error, error.__traceback__)

    def _report_failure(self, phase: str, delay: float) -> None:
        """Raise `plugin_failed` on the 1st, 2nd, 4th, 8th, ... crash of the episode."""
        n = self._episode_crashes
        if n & (n - 1):
            return
        # The plugin's loop has ended (or never started) and the runner's lock is held, so this
        # thread is the channel's only producer right now, as its single-producer rule requires.
        self.res.channel.event(
            time.perf_counter_ns(),
            FAILED_EVENT,
            1.0,
            phase=phase,
            error=self.last_error,
            crashes=n,
            crashes_total=self.crashes,
            restarts=self.restarts,
            retry_in_s=round(delay, 3),
        )

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
        ticks, overruns, skipped = self.counters()
        slot = self.res.slot
        return {
            "name": self.name,
            "state": self.state,
            "rate_hz": self.options.rate_hz,
            "configured_rate_hz": self.configured_rate_hz,
            "model": self.res.model_name,
            "model_version": slot.model.version if slot is not None else None,
            "ticks": ticks,
            "overruns": overruns,
            "skipped": skipped,
            "restarts": self.restarts,
            "crashes": self.crashes,
            "last_error": self.last_error,
            "overrunning": self.overrunning,
            "rate_reductions": self.rate_reductions,
        }

    def stats(self) -> dict[str, Any]:
        """Tick time and lateness percentiles in microseconds, with the counters."""
        ticks, overruns, skipped = self.counters()
        return {
            "tick_us": self.tick_hist.snapshot().summary_us(),
            "lateness_us": self.late_hist.snapshot().summary_us(),
            "ticks": ticks,
            "overruns": overruns,
            "skipped": skipped,
            "rate_hz": self.options.rate_hz,
            "state": self.state,
            "restarts": self.restarts,
            "crashes": self.crashes,
        }


def failure_site(error: BaseException) -> FailureSite:
    """Where `error` was raised: its type and the innermost frame's file and line."""
    tb = error.__traceback__
    if tb is None:
        return (type(error).__name__, "", 0)
    while tb.tb_next is not None:
        tb = tb.tb_next
    return (type(error).__name__, tb.tb_frame.f_code.co_filename, tb.tb_lineno)


def _quiet_teardown(name: str, plugin: Plugin) -> None:
    try:
        plugin.teardown()
    except Exception:  # teardown of a broken plugin must not block its restart
        log.exception("plugin %s: teardown failed", name)
