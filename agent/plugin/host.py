"""The plugin host: runs every configured plugin on its own loop; the engine's control surface.

`PluginHost` implements `agent.engine.api.EngineControl`. Start-up order: import and validate
every configured plugin, build the enabled ones (model slot, HAL devices, output channel), run
all their setups, then enter the real-time process mode (GIL switch interval, heap frozen and GC
moved into the loops' slack: agent/engine/process.py, gc_slack.py), then start the loops and the
supervisor. Any error at start is raised (PluginError, ConfigError, ModelError,
HalError) naming the plugin; once running, a failing plugin is restarted, never fatal.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from pydantic import ValidationError

from agent.config.sections import AgentConfig, PluginConfig
from agent.engine.histogram import HistogramSnapshot
from agent.engine.models import ModelLoader, store_loader
from agent.engine.process import RealtimeMode
from agent.engine.reload import ConfigDiff, PluginChange, diff_configs
from agent.engine.runner import LoopOptions, PluginRunner, RunnerResources
from agent.engine.supervisor import Supervisor
from agent.errors import ConfigError, ModelError, PluginError
from agent.hal import Hal
from agent.plugin.base import Plugin, PluginParams
from agent.plugin.channel import OutputChannel
from agent.plugin.registry import PluginRegistry
from agent.runtime.base import Model
from agent.runtime.slot import ModelSlot

log = logging.getLogger(__name__)


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
        self._params: dict[str, PluginParams] = {}
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
                self._classes[pc.name] = self.registry.load(pc.name)
                self._params[pc.name] = validate_params(pc.name, self._classes[pc.name], pc.params)
            enabled = [pc for pc in self.config.plugins if pc.enabled]
            ready: list[PluginRunner] = []
            try:
                for pc in enabled:
                    runner = self._build(pc, self._params[pc.name])
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
                ", ".join(f"{r.name}@{r.options.rate_hz:g}Hz" for r in ready) or "no plugins",
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
        cls = self._classes[pc.name].for_params(params)
        model_name = pc.model or cls.default_model
        slot = ModelSlot(self._load(pc.name, model_name)) if model_name else None
        try:
            sensors, actuators = self.hal.devices_for(
                pc.name, simulator=cls.simulator, sensors=cls.sensors, actuators=cls.actuators
            )
        except BaseException:
            if slot is not None:
                slot.model.close()
            raise
        runner = PluginRunner(
            pc.name,
            cls,
            params=params,
            resources=RunnerResources(
                slot, sensors, actuators, OutputChannel(pc.name, cls.telemetry_fields), model_name
            ),
            options=LoopOptions(
                rate_hz=effective_rate(pc, cls),
                cpu_affinity=pc.cpu_affinity,
                realtime_priority=pc.realtime_priority,
                collector=self._mode.collector,
            ),
            engine=self.config.engine,
            stable_s=self._stable_s,
            overrun_window_s=self._overrun_window_s,
        )
        self._runners[pc.name] = runner
        return runner

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
            if runner.res.slot is not None:
                runner.res.slot.model.close()
            self.hal.release(name)

    def _runner(self, name: str, *, build: bool = False) -> PluginRunner:
        runner = self._runners.get(name)
        if runner is not None:
            return runner
        pc = self._plugin_config(name)
        if not build:
            raise PluginError(f"plugin {name!r} is not running")
        return self._build(pc, self._params[pc.name])

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
            if runner is not None:
                out.append(runner.info())
                continue
            cls = self._classes.get(pc.name)
            out.append(
                {
                    "name": pc.name,
                    "state": "stopped",
                    "rate_hz": effective_rate(pc, cls) if cls is not None else pc.rate_hz,
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
            merged = {**self._params[name].model_dump(), **params}
            new = validate_params(name, cls, merged)
            runner = self._runners.get(name)
            if runner is not None:
                runner.set_params(new)
            self._params[name] = new
            return new.model_dump(mode="json")

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
            staged = self._stage(diff)
            self._commit(config, diff, staged)
            return {
                "added": [p.name for p in diff.added],
                "removed": diff.removed,
                "changed": {name: ch.fields for name, ch in diff.changed.items()},
                "engine": "applies to loops started from now on" if diff.engine_changed else None,
                "restart_required": diff.restart_required,
            }

    # --- reload in two steps: stage everything that can fail, then commit ---------------------

    def _stage(self, diff: ConfigDiff) -> _Staged:
        staged = _Staged()
        try:
            for pc in diff.added:
                staged.classes[pc.name] = cls = self.registry.load(pc.name)
                staged.params[pc.name] = validate_params(pc.name, cls, pc.params)
            for name, change in diff.changed.items():
                self._stage_change(name, change, staged)
            for pc in diff.added:
                if pc.enabled:
                    self._stage_new_runner(pc, staged)
        except BaseException:
            staged.undo(self)
            raise
        return staged

    def _stage_change(self, name: str, change: PluginChange, staged: _Staged) -> None:
        cls = self._classes[name]
        if "params" in change.fields:
            staged.params[name] = validate_params(name, cls, change.new.params)
        runner = self._runners.get(name)
        if "model" in change.fields and runner is not None:
            model_name = change.new.model or cls.default_model
            if model_name is None or runner.res.slot is None:
                raise ConfigError(
                    [(f"plugins[{name}].model", "cannot add or remove a model live", model_name)]
                )
            try:
                model = self._load(name, model_name)
                staged.models[name] = model
                runner.res.slot.check_compatible(model)
            except ModelError as exc:
                raise model_key_error(name, model_name, exc) from exc
        if change.new.enabled and (runner is None or runner.state == "stopped"):
            params = staged.params.get(name, self._params[name])
            if runner is None:
                staged.built.append(name)
                runner = self._build_for_reload(change.new, params)
            else:
                staged.old_params[name] = runner.params
                runner.params = params
            runner.setup()
            staged.launch.append(name)

    def _stage_new_runner(self, pc: PluginConfig, staged: _Staged) -> None:
        self._classes[pc.name] = staged.classes[pc.name]
        staged.built.append(pc.name)
        runner = self._build_for_reload(pc, staged.params[pc.name])
        runner.setup()
        staged.launch.append(pc.name)

    def _build_for_reload(self, pc: PluginConfig, params: PluginParams) -> PluginRunner:
        """`_build`, with a model that cannot be loaded reported as the config key naming it."""
        try:
            return self._build(pc, params)
        except ModelError as exc:
            model_name = pc.model or self._classes[pc.name].default_model
            raise model_key_error(pc.name, model_name, exc) from exc

    def _commit(self, config: AgentConfig, diff: ConfigDiff, staged: _Staged) -> None:
        for name in diff.removed:
            runner = self._runners.get(name)
            if runner is not None:
                runner.stop()
            self._discard([name])
            self._classes.pop(name, None)
            self._params.pop(name, None)
        self.config = config
        self._classes.update(staged.classes)
        self._params.update(staged.params)
        for runner in self._runners.values():
            runner.engine = config.engine
        for pc in diff.added:
            if pc.name in staged.launch:
                self._runners[pc.name].launch()
        for name, change in diff.changed.items():
            self._commit_change(name, change, staged)
        log.info(
            "config reloaded: %d added, %d removed, %d changed",
            len(diff.added), len(diff.removed), len(diff.changed),
        )  # fmt: skip

    def _commit_change(self, name: str, change: PluginChange, staged: _Staged) -> None:
        runner = self._runners.get(name)
        if runner is None:
            return  # disabled and never built: the new config is all there is to change
        cls = self._classes[name]
        runner.options.cpu_affinity = change.new.cpu_affinity
        runner.options.realtime_priority = change.new.realtime_priority
        if "rate_hz" in change.fields:
            runner.configured_rate_hz = effective_rate(change.new, cls)
            runner.set_rate(runner.configured_rate_hz)
        if name in staged.params:
            runner.set_params(staged.params[name])
        if name in staged.models:
            runner.res.model_name = change.new.model or cls.default_model
            runner.swap_model(staged.models[name]).close()
        if name in staged.launch:
            runner.launch()
        elif not change.new.enabled:
            runner.stop()
        elif change.needs_restart and runner.state == "running":
            runner.restart()


class _Staged:
    """What a reload prepared before changing anything: undone if any step fails."""

    def __init__(self) -> None:
        self.classes: dict[str, type[Plugin]] = {}
        self.params: dict[str, PluginParams] = {}
        self.old_params: dict[str, PluginParams] = {}
        self.models: dict[str, Model] = {}
        self.built: list[str] = []
        self.launch: list[str] = []

    def undo(self, host: PluginHost) -> None:
        """Close loaded models, tear down what was set up, drop runners built for the reload."""
        for model in self.models.values():
            model.close()
        for name in self.launch:
            runner = host._runners.get(name)
            if runner is not None:
                runner.stop(0.0)
        for name, params in self.old_params.items():
            host._runners[name].params = params
        for name in self.built:
            host._discard([name])
            if name in self.classes:
                host._classes.pop(name, None)


def model_key_error(plugin: str, model_name: str | None, exc: ModelError) -> ConfigError:
    """A reload's model failure as `plugins[<plugin>].model: <reason> (got <name>)`."""
    cause = exc.__cause__ if isinstance(exc.__cause__, ModelError) else exc
    where = f" (in {cause.path})" if cause.path else ""
    return ConfigError(
        [(f"plugins[{plugin}].model", f"cannot use model: {cause.reason}{where}", model_name)],
        source="reload",
    )


def effective_rate(pc: PluginConfig, cls: type[Plugin]) -> float:
    """The configured rate when the config sets one, else the plugin's default rate."""
    return pc.rate_hz if "rate_hz" in pc.model_fields_set else cls.default_rate_hz


def validate_params(name: str, cls: type[Plugin], data: dict[str, Any]) -> PluginParams:
    """The plugin's params model over `data`; ConfigError naming `plugins[name].params.key`."""
    try:
        return cls.Params.model_validate(data)
    except ValidationError as exc:
        errors: list[tuple[str, str, object]] = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"])
            path = f"plugins[{name}].params" + (f".{key}" if key else "")
            errors.append((path, err["msg"], err.get("input")))
        raise ConfigError(errors, source="params") from None
