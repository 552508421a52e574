"""`isolate = true`: a plugin's loop in a child process, supervised like any other plugin.

`IsolatedRunner` is a `PluginRunner` whose loop is a `ChildLoop` (agent/engine/isolate_process.py):
the host's handle on a child process (agent/engine/isolate_child.py) that runs the plain
in-process loop. A native crash (a
segfault in a runtime or a delegate) kills only the child; the handle reports it as the loop's
error, with the signal's name, and the runner's usual path takes over: `plugin_failed` event,
restart with back-off, counters and `last_error` in status. The host's other loops never wait on
the child: nothing crosses between the processes inside a tick.

What crosses, and how (docs/realtime.md, "A process per plugin"):
- sensor readings and actuator commands: a shared-memory block per plugin, pumped by one host
  thread per isolated plugin at the plugin's rate (agent/hal/shm.py);
- telemetry rows: a ring in a second shared-memory block per plugin, written by the child's loop
  and drained by the host's sync thread through the plugin's channel (agent/engine/isolate_ring.py);
- control (go, apply params or rate, stop): a pipe; `apply` waits for the child's answer;
- events, counters and histograms: the same pipe, back; the host thread re-emits the events on
  the plugin's own output channel (it is that channel's one event producer while the child runs)
  and keeps the histograms as "everything before this child + this child's".
The model slot lives in the child (loaded there, so a model that crashes on load costs only the
child). A live swap (OTA) names the version's folder: the child loads and checks it while it
ticks on, and activates it between two ticks (`swap_model_folder`); a restart loads the active
version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.engine.isolate_bridge import Bridge
from agent.engine.isolate_child import ChildSpec, ModelSource
from agent.engine.isolate_process import SWAP_TIMEOUT_S, ChildCrashed, ChildLoop
from agent.engine.isolate_ring import RowsBlock, SharedTelemetryChannel
from agent.engine.runner import PluginRunner
from agent.errors import PluginError
from agent.hal.shm import DeviceBlock, Layout
from agent.plugin.base import PluginParams
from agent.runtime.base import Model

__all__ = ["ChildCrashed", "IsolatedRunner", "ModelSource"]

STUCK_S = 3.0
"""A child whose tick count stands still this long (or three periods, if longer) is killed and
restarted: before the systemd watchdog, which checks every 5 s (WatchdogSec=10s), would give up
on the whole agent for it."""
ROWS_CAPACITY = 4096
"""Telemetry rows the shared ring holds, as an in-process channel's: the sync thread drains it
every second or so, so even a 1 kHz plugin emitting every tick leaves room to spare."""


class IsolatedRunner(PluginRunner):
    """A `PluginRunner` whose loop runs in a child process (`isolate = true`)."""

    def __init__(
        self,
        *args: Any,
        plugin_ref: str,
        models: ModelSource | None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self.plugin_ref = plugin_ref
        """`module:QualName` of the registered class, imported by the child."""
        self._models = models
        self._block: DeviceBlock | None = None
        self._rows: RowsBlock | None = None
        self._pending: ChildLoop | None = None
        self._child: ChildLoop | None = None
        self._progress = (0, 0.0)  # the child's tick count, and when it last changed

    def setup(self) -> None:
        """Start a child that imports the plugin, loads its model and runs its setup."""
        with self._lock:
            self._end_pending()
            res = self.res
            if self._block is None:
                sensors = {n: s.spec for n, s in res.sensors.items()}
                actuators = {n: a.spec for n, a in res.actuators.items()}
                self._block = DeviceBlock.create(Layout.of(sensors, actuators))
            if self._rows is None:
                self._rows = RowsBlock.create(ROWS_CAPACITY, len(res.channel.fields))
                res.channel = self._channel_over(self._rows)
            child = ChildLoop(
                self._spec(self._block.name, self._rows.name),
                bridge=Bridge(self._block, res.sensors, res.actuators),
                tick_hist=self.tick_hist,
                late_hist=self.late_hist,
                emit_events=self._emit_events,
            )
            try:
                child.wait_ready()
            except PluginError as exc:
                raise PluginError(f"plugin {self.name!r}: setup failed: {exc}") from exc
            self._pending = child

    def _channel_over(self, rows: RowsBlock) -> SharedTelemetryChannel:
        """The plugin's channel, its telemetry ring now `rows`'s. The host built a plain one,
        which nothing but this runner holds; a runner set up again after `close` gets a new
        block and channel (the closed ones stay readable to whoever still holds them)."""
        plain = self.res.channel
        channel = SharedTelemetryChannel(plain.plugin, plain.fields, rows.ring)
        channel.recent = plain.recent
        return channel

    def _spec(self, shm_name: str, rows_name: str) -> ChildSpec:
        res, options = self.res, self.options
        return ChildSpec(
            name=self.name,
            plugin_ref=self.plugin_ref,
            params=self._params.model_dump(mode="json"),
            rate_hz=self._rate_hz,
            engine=self.engine,
            model_name=res.model_name,
            models=self._models,
            shm_name=shm_name,
            rows_name=rows_name,
            sensors={n: s.spec for n, s in res.sensors.items()},
            actuators={n: a.spec for n, a in res.actuators.items()},
            cpu_affinity=options.cpu_affinity,
            realtime_priority=options.realtime_priority,
            wait=options.wait,
            log_level=logging.getLogger().getEffectiveLevel(),
        )

    def launch(self) -> None:
        """Let the set-up child tick."""
        with self._lock:
            child = self._pending
            if child is None:
                raise PluginError(f"plugin {self.name!r}: launch before setup")
            self._pending = None
            self._child = child
            child.go()
            self._loop = child  # type: ignore[assignment]  # the runner reads a Loop's surface
            self.state = "running"
            self._started_at = time.monotonic()
            self._progress = (0, self._started_at)
            self._watch.restart()

    def _check_running(self, now: float) -> None:
        """As in process, and a child stuck in one tick is killed, which ends in the usual
        crash path: a thread stuck there can only stop the watchdog's pings (the whole agent
        restarts), a process can be ended alone."""
        child = self._child
        if child is not None and child.alive and child.error is None:
            ticks, since = self._progress
            if child.ticks != ticks:
                self._progress = (child.ticks, now)
            elif now - since > max(STUCK_S, 3.0 / self._rate_hz):
                child.kill_stuck(now - since)
        super()._check_running(now)

    def post(self, fn: Callable[[], Any], timeout: float = 2.0) -> Any:
        """Run `fn` here when nothing runs; PluginError while a child does."""
        with self._lock:
            if self._child is not None and self._child.alive:
                return self._child.post(fn, timeout)
            return fn()

    def apply(
        self,
        *,
        params: PluginParams | None = None,
        rate_hz: float | None = None,
        timeout: float = 2.0,
    ) -> None:
        """Make `params` and/or `rate_hz` the ones in force; a child gets them between ticks."""
        with self._lock:
            child = self._child if self._child is not None else self._pending
            if child is not None and child.reap(0.0) is None:
                data = params.model_dump(mode="json") if params is not None else None
                child.apply(data, rate_hz, timeout)
            if params is not None:
                self._params = params
            if rate_hz is not None:
                self._rate_hz = rate_hz
                self._watch.restart()

    def swap_model(self, model: Model, timeout: float = 2.0, *, name: str | None = None) -> Model:
        """A model object cannot cross into the child: see `swap_model_folder`."""
        raise PluginError(
            f"plugin {self.name!r} is isolated: its model is loaded in its own process; "
            "swap it by folder (swap_model_folder) or restart the plugin"
        )

    def swap_model_folder(self, folder: Path | None, timeout: float = SWAP_TIMEOUT_S) -> str:
        """Have the child load the model in `folder` (None: the active version) and run it from
        a tick on; the version it now runs. PluginError with the reason when it cannot."""
        with self._lock:
            child = self._child
        # Not under the lock: loading may take seconds, and supervision must go on meanwhile.
        if child is None or not child.alive:
            raise PluginError(f"plugin {self.name!r} is not running: nothing to swap")
        return child.swap(str(folder) if folder is not None else None, timeout)

    def _end_loop(self, timeout: float) -> bool:
        ended = super()._end_loop(timeout)
        self._child = None
        self._end_pending()
        return ended

    def _end_pending(self) -> None:
        child, self._pending = self._pending, None
        if child is not None:
            child.stop()
            child.join(1.0)

    def close(self) -> None:
        """Remove the shared-memory blocks (after the last stop); rows still in the ring stay
        readable through the channel until it goes."""
        with self._lock:
            if self._block is not None:
                self._block.close()
                self._block = None
            if self._rows is not None:
                self._rows.close()
                self._rows = None

    def info(self) -> dict[str, Any]:
        """As in process, with the model version the child loaded and the child's pid."""
        child = self._child
        out = super().info()
        out["model_version"] = child.model_version if child is not None else None
        out["pid"] = child.pid if child is not None else None
        out["isolated"] = True
        return out

    def stats(self) -> dict[str, Any]:
        """As in process, marked isolated."""
        return {**super().stats(), "isolated": True}

    def _emit_events(self, events: list[tuple[str, int, float, dict[str, Any]]]) -> None:
        # The host thread of the running child is this channel's only event producer (its rows
        # are in the shared ring already).
        channel = self.res.channel
        for kind, ts_ns, score, data in events:
            channel.event(ts_ns, kind, score, **data)
