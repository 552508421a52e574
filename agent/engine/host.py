"""The plugin host: runs every configured plugin on its own loop; the engine's control surface.

`PluginHost` implements `agent.engine.api.EngineControl`. Start-up order: import and validate
every configured plugin, build the enabled ones (model slot, HAL devices, output channel), run
all their setups, then enter the real-time process mode (GIL switch interval, heap frozen and GC
moved into the loops' slack: agent/engine/process.py, gc_slack.py), then start the loops and the
supervisor. Any error at start is raised (PluginError, ConfigError, ModelError,
HalError) naming the plugin; once running, a failing plugin is restarted, never fatal.

One owner per fact: a built plugin's params and rate in force belong to its `PluginRunner`
(changed through `PluginRunner.apply`); the host keeps params only for plugins not built yet, and
the configured rate is read from the config. A reload stages everything that can fail, then
commits (undoing the staging on any error): agent/engine/staging.py.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

from agent.config.sections import AgentConfig, PluginConfig
from agent.engine.histogram import HistogramSnapshot
from agent.engine.models import ModelLoader, store_loader
from agent.engine.process import RealtimeMode
from agent.engine.reload import diff_configs
from agent.engine.resources import LoopOptions, RunnerResources
from agent.engine.runner import PluginRunner
from agent.engine.staging import Reload
from agent.engine.supervisor import Supervisor
from agent.errors import ModelError, PluginError
from agent.hal.router import Hal
from agent.plugin.base import Plugin, PluginParams
from agent.plugin.channel import OutputChannel
from agent.plugin.registry import PluginRegistry
from agent.plugin.settings import effective_rate, validate_params
from agent.runtime.base import Model
from agent.runtime.slot import ModelSlot

log = logging.getLogger(__name__)

IN_PROCESS_PRIORITY = (
    "plugin %s: realtime_priority without isolate = true: in process a SCHED_FIFO loop still waits "
    "for the interpreter lock the agent's other threads hold, and preempting them on its core can "
    "make that wait longer and the other loops later (docs/realtime.md); set isolate = true too"
)


class PluginHost:
    """Runs the configured plugins and lets any thread inspect and change them."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        hal: Hal | None = None,
        load_model: ModelLoader | None = None,
        registry: PluginRegistry | None = None,
        stable_s: float = 30.0,
        overrun_window_s: float = 2.0,
        supervise_interval_s: float = 0.05,
    ) -> None:
        self.config = config
        self.hal = hal if hal is not None else Hal(config.hal)
        self.registry = registry if registry is not None else PluginRegistry()
        self._load_model = load_model if load_model is not None else store_loader(config)
        self._stable_s = stable_s
        self._overrun_window_s = overrun_window_s
        self._lock = threading.RLock()
        self._classes: dict[str, type[Plugin]] = {}
        self._unbuilt_params: dict[str, PluginParams] = {}
        """Params of configured plugins that have no runner; a runner owns its plugin's."""
        self._runners: dict[str, PluginRunner] = {}
        self._supervisor = Supervisor(
            lambda: list(self._runners.values()),
            interval_s=supervise_interval_s,
            gc_fallback=config.engine.gc_mode == "freeze",
        )
        self._mode = RealtimeMode(config.engine)
        self.started = False

    # --- start and stop ------------------------------------------------------------------------

    def start(self) -> None:
        """Set up every enabled plugin, then start all loops together."""
        with self._lock:
            if self.started:
                return
            for pc in self.config.plugins:
                self._classes[pc.name] = cls = self.registry.load(pc.name)
                self._unbuilt_params[pc.name] = validate_params(pc.name, cls, pc.params)
            enabled = [pc for pc in self.config.plugins if pc.enabled]
            ready: list[PluginRunner] = []
            try:
                for pc in enabled:
                    runner = self._build(pc, self._unbuilt_params[pc.name])
                    runner.setup()
                    ready.append(runner)
            except BaseException:
                for runner in ready:
                    runner.stop(0.0)
                self._discard(list(self._runners))
                raise
            self._mode.enter()
            for runner in ready:
                runner.launch()
            self._supervisor.start()
            self.started = True
            log.info(
                "engine started: %s",
                ", ".join(f"{r.name}@{r.rate_hz:g}Hz" for r in ready) or "no plugins",
            )

    def stop(self, timeout: float = 1.0) -> None:
        """Stop every loop (all asked at once), tear plugins down, close the models."""
        with self._lock:
            deadline = time.monotonic() + timeout
            self._supervisor.stop(timeout)
            runners = list(self._runners.values())
            for runner in runners:
                runner.request_stop()
            for runner in runners:
                ended = runner.stop(max(0.0, deadline - time.monotonic()))
                # Runners stay, so their statistics can still be read after the stop. A loop
                # stuck in a tick keeps its model: closing it under a running invoke could crash.
                if ended and runner.res.slot is not None:
                    runner.res.slot.model.close()
                if ended:
                    runner.close()
            self._mode.leave()
            self.started = False

    def wait_ready(self, timeout: float) -> bool:
        """Block until every running loop has ticked at least once; False on timeout."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            runners = [r for r in self._runners.values() if r.state == "running"]
            if all(r.ready for r in runners):
                return True
            time.sleep(0.001)
        return False

    # --- building and discarding runners -------------------------------------------------------

    def _build(self, pc: PluginConfig, params: PluginParams) -> PluginRunner:
        if pc.realtime_priority and not pc.isolate:
            log.warning(IN_PROCESS_PRIORITY, pc.name)
        cls = self._classes[pc.name].for_params(params)
        model_name = pc.model or cls.default_model
        # An isolated plugin loads its model in its own process: one that crashes the runtime on
        # load must cost that process, not the host.
        slot = ModelSlot(self._load(pc.name, model_name)) if model_name and not pc.isolate else None
        try:
            sensors, actuators = self.hal.devices_for(
                pc.name, simulator=cls.simulator, sensors=cls.sensors, actuators=cls.actuators
            )
        except BaseException:
            if slot is not None:
                slot.model.close()
            raise
        runner = self._runner_type(pc)(
            pc.name,
            cls,
            params=params,
            rate_hz=effective_rate(pc, cls),
            resources=RunnerResources(
                slot, sensors, actuators, OutputChannel(pc.name, cls.telemetry_fields), model_name
            ),
            options=LoopOptions(
                pc.cpu_affinity, pc.realtime_priority, self._mode.collector, wait=pc.wait
            ),
            engine=self.config.engine,
            stable_s=self._stable_s,
            overrun_window_s=self._overrun_window_s,
            **self._isolation(pc),
        )
        self._runners[pc.name] = runner
        self._unbuilt_params.pop(pc.name, None)  # the runner owns them from now on
        return runner

    def _runner_type(self, pc: PluginConfig) -> type[PluginRunner]:
        if not pc.isolate:
            return PluginRunner
        from agent.engine.isolate import IsolatedRunner  # only a config that isolates pays for it

        return IsolatedRunner

    def _isolation(self, pc: PluginConfig) -> dict[str, Any]:
        """What an isolated runner needs beyond a plain one: the class to import in the child
        and where the child loads models from (the host's own loader stays in the host)."""
        if not pc.isolate:
            return {}
        from agent.engine.isolate_child import ModelSource

        base = self._classes[pc.name]
        config = self.config
        return {
            "plugin_ref": f"{base.__module__}:{base.__qualname__}",
            "models": ModelSource(config.models_dir, config.state_dir, config.runtime),
        }

    def _load(self, plugin: str, model_name: str) -> Model:
        try:
            return self._load_model(model_name)
        except ModelError as exc:
            raise ModelError(f"plugin {plugin!r}: {exc.reason}", path=exc.path) from exc

    def _discard(self, names: list[str]) -> None:
        for name in names:
            runner = self._runners.pop(name, None)
            if runner is None:
                continue
            self._unbuilt_params[name] = runner.params  # dropped with the config entry, if any
            if runner.res.slot is not None:
                runner.res.slot.model.close()
            runner.close()
            self.hal.release(name)

    def runner(self, name: str) -> PluginRunner:
        """The runner of plugin `name` (PluginError if it has none)."""
        return self._runner(name)

    def _runner(self, name: str, *, build: bool = False) -> PluginRunner:
        runner = self._runners.get(name)
        if runner is not None:
            return runner
        pc = self._plugin_config(name)
        if not build:
            raise PluginError(f"plugin {name!r} is not running")
        return self._build(pc, self._unbuilt_params[pc.name])

    def _params_of(self, name: str) -> PluginParams:
        runner = self._runners.get(name)
        return runner.params if runner is not None else self._unbuilt_params[name]

    def _plugin_config(self, name: str) -> PluginConfig:
        for pc in self.config.plugins:
            if pc.name == name:
                return pc
        known = ", ".join(p.name for p in self.config.plugins) or "none"
        raise PluginError(f"unknown plugin {name!r} (configured: {known})")

    # --- EngineControl ---------------------------------------------------------------------------

    def plugins(self) -> list[dict[str, Any]]:
        """One dict per configured plugin: name, state, rate_hz, model, model_version, ticks,
        overruns, restarts, crashes, last_error (plus skipped, overrunning, rate_reductions)."""
        out: list[dict[str, Any]] = []
        for pc in self.config.plugins:
            runner = self._runners.get(pc.name)
            cls = self._classes.get(pc.name)
            configured = effective_rate(pc, cls) if cls is not None else pc.rate_hz
            if runner is not None:
                out.append({**runner.info(), "configured_rate_hz": configured})
                continue
            out.append(
                {
                    "name": pc.name,
                    "state": "stopped",
                    "rate_hz": configured,
                    "configured_rate_hz": configured,
                    "model": pc.model or (cls.default_model if cls is not None else None),
                    "model_version": None,
                    "ticks": 0,
                    "overruns": 0,
                    "restarts": 0,
                    "crashes": 0,
                    "last_error": None,
                }
            )
        return out

    def start_plugin(self, name: str) -> None:
        """Start a stopped plugin; PluginError if unknown."""
        with self._lock:
            self._runner(name, build=True).start()

    def stop_plugin(self, name: str) -> None:
        """Stop a running plugin (its loop ends within one period)."""
        with self._lock:
            self._plugin_config(name)
            runner = self._runners.get(name)
            if runner is not None:
                runner.stop()

    def restart_plugin(self, name: str) -> None:
        """Stop, then start again with fresh setup."""
        with self._lock:
            self._runner(name, build=True).restart()

    def set_params(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Validate a partial update merged over the current params, apply it between ticks and
        return the full params now in force; ConfigError naming `plugins[name].params.key`."""
        with self._lock:
            self._plugin_config(name)
            cls = self._classes[name]
            merged = {**self._params_of(name).model_dump(), **params}
            new = validate_params(name, cls, merged)
            runner = self._runners.get(name)
            if runner is not None:
                runner.apply(params=new)
            else:
                self._unbuilt_params[name] = new
            return new.model_dump(mode="json")

    def params(self, name: str) -> PluginParams:
        """The params in force for plugin `name`; PluginError if unknown."""
        with self._lock:
            self._plugin_config(name)
            return self._params_of(name)

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per plugin: tick_us and lateness_us (p50, p99, p999, max), ticks, overruns, skipped,
        rate_hz, and state, restarts and crashes (so metrics show a crash storm)."""
        return {name: runner.stats() for name, runner in list(self._runners.items())}

    def histograms(self) -> dict[str, tuple[HistogramSnapshot, HistogramSnapshot]]:
        """Per plugin: snapshots of the tick-time and lateness histograms (for exporters)."""
        return {
            name: (runner.tick_hist.snapshot(), runner.late_hist.snapshot())
            for name, runner in list(self._runners.items())
        }

    def channels(self) -> list[OutputChannel]:
        """The output channel of every plugin, for the sync thread to drain."""
        return [runner.res.channel for runner in list(self._runners.values())]

    def model_slots(self) -> dict[str, ModelSlot]:
        """The model slot of every plugin that has a model, keyed by plugin name."""
        return {
            name: runner.res.slot
            for name, runner in list(self._runners.items())
            if runner.res.slot is not None
        }

    def swap_model(self, name: str, model: Model, *, timeout: float = 2.0) -> Model:
        """Make `model` the one plugin `name` runs: bound off the loop, activated by the loop
        between two ticks; returns the old model (the caller closes it)."""
        return self._runner(name).swap_model(model, timeout)

    def swap_model_folder(self, name: str, folder: Path | None, *, timeout: float = 30.0) -> str:
        """Have isolated plugin `name` load the model in `folder` (None: the active version) in
        its own process and run it from a tick on; the version it now runs. PluginError if the
        plugin is not isolated, or its child refused the model or died loading it."""
        runner = self._runner(name)
        swap = getattr(runner, "swap_model_folder", None)  # IsolatedRunner's: imported lazily
        if swap is None:
            raise PluginError(f"plugin {name!r} runs in process: swap a loaded model instead")
        version: str = swap(folder, timeout)
        return version

    def tick_counters(self) -> dict[str, int]:
        """Ticks done so far per plugin on a live loop (the watchdog checks that they advance).

        A plugin whose loop crashed, or that waits in backoff, is left out: the supervisor is
        restarting it, and withholding the watchdog would get every healthy loop killed with it.
        """
        return {
            name: runner.counters()[0]
            for name, runner in list(self._runners.items())
            if runner.ticking
        }

    def reload(self, config: AgentConfig) -> dict[str, Any]:
        """Apply a new, already validated config: plugins added, removed, re-rated or re-paramed;
        returns what changed. On any error nothing changes and the error is raised."""
        with self._lock:
            diff = diff_configs(self.config, config)
            Reload(self, diff).run(config)
            return {
                "added": [p.name for p in diff.added],
                "removed": diff.removed,
                "changed": {name: ch.fields for name, ch in diff.changed.items()},
                "engine": "applies to loops started from now on" if diff.engine_changed else None,
                "restart_required": diff.restart_required,
            }
