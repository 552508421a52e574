"""The child process of an isolated plugin: the plain in-process loop, one plugin, one pipe.

The child loads its own model (a model that crashes the runtime on load takes only the child
down), reads and drives its devices through the host's shared-memory block
(agent/hal/shm.py) and runs the plugin on the same `Loop` as an in-process plugin.
Its main thread serves the pipe: control from the host (go, apply, swap, stop), and back to the host
the plugin's events (drained from its channel every `FLUSH_S`) and the loop's counters and
histograms (every `STATS_S`). Telemetry rows need no hand-over: the plugin's `telemetry` writes
them straight into the host's shared ring (agent/engine/isolate_ring.py). Nothing but the loop
thread touches the plugin between `go` and `stop`; apply goes through the loop's mailbox, between
two ticks, as in the host. A model swap
(an OTA update, its revert, a rollback) is loaded and checked on a worker thread while the loop
ticks on and the main thread keeps serving, and activated through the mailbox like an
in-process swap.
"""

from __future__ import annotations

import importlib
import logging
import queue
import signal
import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from agent.config.sections import EngineConfig, RuntimeConfig
from agent.engine.histogram import Histogram
from agent.engine.isolate_ring import RowsBlock, SharedTelemetryChannel
from agent.engine.loop import Loop
from agent.engine.process import RealtimeMode
from agent.hal.base import ActuatorSpec, SensorSpec
from agent.hal.shm import DeviceBlock, Layout, ShmActuator, ShmSensor
from agent.plugin.base import Plugin, PluginContext
from agent.runtime.base import Model
from agent.runtime.slot import ModelSlot

FLUSH_S = 0.02
"""How often the child hands the plugin's events to the host (the host's sync drains slower)."""
STATS_S = 0.1
"""How often the child sends its counters and histograms (status, watchdog, live view)."""


@dataclass(frozen=True)
class ModelSource:
    """Loads a model by name the way the host's store loader does (picklable, for the child)."""

    models_dir: Path
    state_dir: Path
    runtime: RuntimeConfig

    def __call__(self, name: str) -> Model:
        """The active version of model `name` (ModelError with the reason otherwise)."""
        from agent.runtime.folders import ModelStore

        return self.from_folder(ModelStore(self.models_dir, self.state_dir).resolve(name))

    def from_folder(self, folder: Path) -> Model:
        """The model in `folder` (a version an update brings), loaded as the store would."""
        from agent.runtime.loader import load_model

        return load_model(folder, self.runtime)


@dataclass(frozen=True)
class ChildSpec:
    """Everything the child needs to build and run one plugin (sent once, pickled)."""

    name: str
    plugin_ref: str
    """`module:QualName` of the registered plugin class (`for_params` is applied in the child)."""
    params: dict[str, Any]
    rate_hz: float
    engine: EngineConfig
    model_name: str | None
    models: ModelSource | None
    shm_name: str
    rows_name: str
    """The host's telemetry ring (agent/engine/isolate_ring.py), kept across restarts."""
    sensors: dict[str, SensorSpec] = field(default_factory=dict)
    actuators: dict[str, ActuatorSpec] = field(default_factory=dict)
    cpu_affinity: list[int] | None = None
    realtime_priority: int | None = None
    wait: str = "sleep"
    log_level: int = logging.WARNING
    """The host's root log level: the child logs to the same stderr at the same level."""


def child_main(spec: ChildSpec, conn: Connection) -> None:
    """Entry point of the child process: set up, report, run until told to stop or crashed."""
    # Ctrl-C in a terminal reaches the whole process group: the host decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # The host's plain format (agent/service/logs.py); a JSON log gets plain lines from here.
    logging.basicConfig(level=spec.log_level, format="%(levelname)s %(name)s: %(message)s")
    child = _Child(spec, conn)
    try:
        child.setup()
    except Exception as exc:  # reported as the plugin's setup failure, like in-process
        conn.send(("failed", f"{type(exc).__name__}: {exc}"))
        return
    child.serve()


class _Child:
    def __init__(self, spec: ChildSpec, conn: Connection) -> None:
        self.spec = spec
        self.conn = conn
        self.tick_hist = Histogram()
        self.late_hist = Histogram()
        self.loop: Loop | None = None
        self._swapping: threading.Thread | None = None
        self._swaps_done: queue.SimpleQueue[tuple[str | None, str | None]] = queue.SimpleQueue()

    def setup(self) -> None:
        spec = self.spec
        module, _, qualname = spec.plugin_ref.partition(":")
        base: Any = importlib.import_module(module)
        for part in qualname.split("."):
            base = getattr(base, part)
        params = base.Params.model_validate(spec.params)
        cls: type[Plugin] = base.for_params(params)
        slot = None
        if spec.model_name is not None and spec.models is not None:
            slot = ModelSlot(spec.models(spec.model_name))
        self.slot = slot
        layout = Layout.of(spec.sensors, spec.actuators)
        self.block = block = DeviceBlock.attach(spec.shm_name, layout)
        # Pinned offset 0: stamps stay perf_counter_ns (one clock for every process on Linux);
        # the host's channel turns them into wall-clock time: events as it takes them over, rows
        # as it drains them from the ring.
        self.rows = RowsBlock.attach(spec.rows_name)
        self.channel = SharedTelemetryChannel(
            spec.name, cls.telemetry_fields, self.rows.ring, wall_offset_ns=0
        )
        self.ctx = ctx = PluginContext(
            name=spec.name,
            rate_hz=spec.rate_hz,
            params=params,
            model=slot,
            sensors={n: ShmSensor(block.sensors[n], s) for n, s in spec.sensors.items()},
            actuators={n: ShmActuator(block.actuators[n], s) for n, s in spec.actuators.items()},
            out=self.channel,
        )
        self.params_model = base.Params
        self.plugin = plugin = cls()
        plugin.setup(ctx)
        self.conn.send(("ready", slot.model.version if slot is not None else None))

    def serve(self) -> None:
        conn = self.conn
        mode = RealtimeMode(self.spec.engine)
        try:
            while True:  # before `go`: nothing ticks, only stop or a parameter change can come
                msg = conn.recv()
                if msg[0] == "go":
                    break
                if msg[0] == "stop":
                    return
                self._control(msg)
            mode.enter()
            self._run_loop(mode)
        except (EOFError, OSError):
            pass  # the host is gone: end quietly, nobody is left to tell
        finally:
            self._finish()
            mode.leave()

    def _run_loop(self, mode: RealtimeMode) -> None:
        spec, conn = self.spec, self.conn
        tick = self.plugin.tick
        if spec.sensors or spec.actuators:
            clock, plugin_tick = self.block.clock, tick

            def tick(now_ns: int) -> None:
                clock[0] = now_ns  # the host's pump times its next sensor copy from this
                plugin_tick(now_ns)

        self.loop = loop = Loop(
            spec.name,
            tick,
            rate_hz=spec.rate_hz,
            spin_us=spec.engine.spin_us,
            collector=mode.collector,
            cpu_affinity=spec.cpu_affinity,
            realtime_priority=spec.realtime_priority,
            wait=spec.wait,
            tick_hist=self.tick_hist,
            late_hist=self.late_hist,
        )
        loop.start()
        next_stats = time.monotonic()
        while loop.alive:
            if conn.poll(FLUSH_S):
                msg = conn.recv()
                if msg[0] == "stop":
                    return
                self._control(msg)
            self._send_swaps()
            self._flush()
            if time.monotonic() >= next_stats:
                self._send_stats()
                next_stats += STATS_S
        error = loop.error
        text = "".join(traceback.format_exception(error)) if error is not None else ""
        message = f"{type(error).__name__}: {error}" if error is not None else "loop ended"
        self._flush()
        self._send_stats()
        conn.send(("error", message, text))

    def _control(self, msg: tuple[Any, ...]) -> None:
        if msg[0] != "swap":
            self._apply(msg)
            return
        folder = msg[1]
        loop = self.loop
        if loop is None or not loop.alive:  # nothing ticks: swap right here
            self.conn.send(("swapped", *self._swap(folder)))
        elif self._swapping is not None and self._swapping.is_alive():
            self.conn.send(("swapped", "another model swap is still loading", None))
        else:
            # Loading may take seconds: off this thread, which keeps sending outputs and
            # stats meanwhile (the host's stuck-child check reads the tick count from them).
            done = self._swaps_done
            self._swapping = threading.Thread(
                target=lambda: done.put(self._swap(folder)), name="model-swap", daemon=True
            )
            self._swapping.start()

    def _swap(self, folder: str | None) -> tuple[str | None, str | None]:
        """Load the model in `folder` (None: the active version by name), check it against the
        slot and the plugin, make it the one the loop runs between two ticks, close the old;
        (error, None) or (None, the version now running)."""
        slot, models, name = self.slot, self.spec.models, self.spec.model_name
        if slot is None or models is None or name is None:
            return "the plugin has no model slot", None
        try:
            model = models.from_folder(Path(folder)) if folder else models(name)
        except Exception as exc:  # a load failure refuses the swap; the old model runs on
            return f"{type(exc).__name__}: {exc}", None
        try:
            fast = slot.prepare(model)
            self.plugin.check_model(model)
            loop = self.loop
            if loop is not None and loop.alive:
                old = loop.post(lambda: slot.activate(model, fast))
            else:
                old = slot.activate(model, fast)
        except Exception as exc:
            model.close()
            return f"{type(exc).__name__}: {exc}", None
        old.close()
        return None, model.version

    def _send_swaps(self) -> None:
        while not self._swaps_done.empty():
            self.conn.send(("swapped", *self._swaps_done.get()))

    def _apply(self, msg: tuple[Any, ...]) -> None:
        _, params_data, rate_hz = msg
        try:
            params = self.params_model.model_validate(params_data) if params_data else None
            plugin, ctx, loop = self.plugin, self.ctx, self.loop

            def between_ticks() -> None:
                if params is not None:
                    plugin.apply_params(params)
                    ctx.params = params
                if rate_hz is not None:
                    ctx.rate_hz = rate_hz
                    if loop is not None:
                        loop.set_rate(rate_hz)

            if loop is not None and loop.alive:
                loop.post(between_ticks)
            else:
                between_ticks()
            self.spec = _with_rate(self.spec, rate_hz)
            self.conn.send(("applied", None))
        except Exception as exc:  # the plugin refused: the host raises it to the caller
            self.conn.send(("applied", f"{type(exc).__name__}: {exc}"))

    def _flush(self) -> None:
        channel = self.channel
        if channel.pending[1]:
            evs = [(e.kind, e.ts_ns, e.score, e.data) for e in channel.drain_events()]
            self.conn.send(("events", evs))

    def _send_stats(self) -> None:
        loop = self.loop
        ticks = (loop.ticks, loop.overruns, loop.skipped) if loop is not None else (0, 0, 0)
        self.conn.send(("stats", ticks, _hist_state(self.tick_hist), _hist_state(self.late_hist)))

    def _finish(self) -> None:
        loop = self.loop
        ended = True
        if loop is not None:
            loop.stop()
            ended = loop.join(1.0)
        try:
            if ended:  # like the host: a tick still running keeps its instance
                self.plugin.teardown()
        except Exception:  # like the host: a failing teardown must not block the stop
            traceback.print_exc()
        try:
            self._flush()
            self._send_stats()
        except (EOFError, OSError):
            pass
        if self.slot is not None:
            self.slot.model.close()


def _hist_state(hist: Histogram) -> tuple[Any, int, int]:
    return (hist.counts.copy(), hist.max_ns, hist.total_ns)


def _with_rate(spec: ChildSpec, rate_hz: float | None) -> ChildSpec:
    if rate_hz is None:
        return spec
    from dataclasses import replace

    return replace(spec, rate_hz=rate_hz)
