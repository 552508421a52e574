"""A config reload in two steps: stage everything that can fail, then commit.

Staging validates params, loads models and builds and sets up runners without touching what
runs; any error undoes what was staged and leaves the engine as it was. Committing then applies
the changes through the runners' public methods. `Reload` is the host's own machinery, split out
for size: it works on the host's tables directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.config.sections import AgentConfig, PluginConfig
from agent.engine.reload import ConfigDiff, PluginChange
from agent.engine.resources import LoopOptions
from agent.errors import ConfigError, ModelError
from agent.plugin.base import Plugin, PluginParams
from agent.plugin.settings import effective_rate, validate_params
from agent.runtime.base import Model

if TYPE_CHECKING:
    from agent.engine.host import PluginHost
    from agent.engine.runner import PluginRunner

log = logging.getLogger("agent.engine.host")  # reload lines under the host's name, as before


@dataclass
class Staged:
    """What a reload prepared: plugin classes and params validated, models loaded, runners built
    and set up; the host undoes all of it if any step fails."""

    classes: dict[str, type[Plugin]] = field(default_factory=dict)
    params: dict[str, PluginParams] = field(default_factory=dict)
    old_params: dict[str, PluginParams] = field(default_factory=dict)
    """Params of stopped runners before the reload gave them new ones."""
    unbuilt_params: dict[str, PluginParams] = field(default_factory=dict)
    """Params the host kept for plugins the reload built a runner for."""
    models: dict[str, Model] = field(default_factory=dict)
    built: list[str] = field(default_factory=list)
    launch: list[str] = field(default_factory=list)


class Reload:
    """One reload of the host to a new config, as computed by `diff_configs`."""

    def __init__(self, host: PluginHost, diff: ConfigDiff) -> None:
        self.host = host
        self.diff = diff
        self.staged = Staged()

    def run(self, config: AgentConfig) -> None:
        """Stage, then commit; on a staging error everything staged is undone and it is raised."""
        try:
            self._stage()
        except BaseException:
            self._undo()
            raise
        self._commit(config)

    def _stage(self) -> None:
        diff = self.diff
        for pc in diff.added:
            self.staged.classes[pc.name] = cls = self.host.registry.load(pc.name)
            self.staged.params[pc.name] = validate_params(pc.name, cls, pc.params)
        for name, change in diff.changed.items():
            self._stage_change(name, change)
        for pc in diff.added:
            if pc.enabled:
                self._stage_new_runner(pc)

    def _undo(self) -> None:
        """Close loaded models, tear down what was set up, drop runners built for the reload."""
        for model in self.staged.models.values():
            model.close()
        for name in self.staged.launch:
            runner = self.host._runners.get(name)
            if runner is not None:
                runner.stop(0.0)
        for name, params in self.staged.old_params.items():
            self.host._runners[name].apply(params=params)
        for name in self.staged.built:
            self.host._discard([name])
            if name in self.staged.classes:
                self.host._classes.pop(name, None)
                self.host._unbuilt_params.pop(name, None)
            elif name in self.staged.unbuilt_params:
                self.host._unbuilt_params[name] = self.staged.unbuilt_params[name]

    def _stage_change(self, name: str, change: PluginChange) -> None:
        cls = self.host._classes[name]
        if "params" in change.fields:
            self.staged.params[name] = validate_params(name, cls, change.new.params)
        runner = self.host._runners.get(name)
        if "model" in change.fields and runner is not None:
            model_name = change.new.model or cls.default_model
            if model_name is None or runner.res.slot is None:
                raise ConfigError(
                    [(f"plugins[{name}].model", "cannot add or remove a model live", model_name)]
                )
            try:
                model = self.host._load(name, model_name)
                self.staged.models[name] = model
                runner.res.slot.check_compatible(model)
            except ModelError as exc:
                raise model_key_error(name, model_name, exc) from exc
        if change.new.enabled and (runner is None or runner.state == "stopped"):
            params = self.staged.params.get(name, self.host._params_of(name))
            if runner is None:
                self.staged.built.append(name)
                self.staged.unbuilt_params[name] = self.host._unbuilt_params[name]
                runner = self._build_for_reload(change.new, params)
            else:
                self.staged.old_params[name] = runner.params
                runner.apply(params=params)  # stopped: kept for the setup below
            runner.setup()
            self.staged.launch.append(name)

    def _stage_new_runner(self, pc: PluginConfig) -> None:
        self.host._classes[pc.name] = self.staged.classes[pc.name]
        self.staged.built.append(pc.name)
        runner = self._build_for_reload(pc, self.staged.params[pc.name])
        runner.setup()
        self.staged.launch.append(pc.name)

    def _build_for_reload(self, pc: PluginConfig, params: PluginParams) -> PluginRunner:
        """`_build`, with a model that cannot be loaded reported as the config key naming it."""
        try:
            return self.host._build(pc, params)
        except ModelError as exc:
            model_name = pc.model or self.host._classes[pc.name].default_model
            raise model_key_error(pc.name, model_name, exc) from exc

    def _commit(self, config: AgentConfig) -> None:
        diff = self.diff
        for name in diff.removed:
            runner = self.host._runners.get(name)
            if runner is not None:
                runner.stop()
            self.host._discard([name])
            self.host._classes.pop(name, None)
            self.host._unbuilt_params.pop(name, None)
        self.host.config = config
        self.host._classes.update(self.staged.classes)
        self.host._unbuilt_params.update(
            {n: p for n, p in self.staged.params.items() if n not in self.host._runners}
        )
        for runner in self.host._runners.values():
            runner.reconfigure(config.engine)
        for pc in diff.added:
            if pc.name in self.staged.launch:
                self.host._runners[pc.name].launch()
        for name, change in diff.changed.items():
            self._commit_change(name, change)
        log.info(
            "config reloaded: %d added, %d removed, %d changed",
            len(diff.added), len(diff.removed), len(diff.changed),
        )  # fmt: skip

    def _commit_change(self, name: str, change: PluginChange) -> None:
        runner = self.host._runners.get(name)
        if runner is None:
            return  # disabled and never built: the new config is all there is to change
        cls = self.host._classes[name]
        new = change.new
        options = LoopOptions(new.cpu_affinity, new.realtime_priority, wait=new.wait)
        runner.reconfigure(self.host.config.engine, options)
        rate = effective_rate(new, cls) if "rate_hz" in change.fields else None
        if rate is not None or name in self.staged.params:
            runner.apply(params=self.staged.params.get(name), rate_hz=rate)
        if name in self.staged.models:
            old = runner.swap_model(self.staged.models[name], name=new.model or cls.default_model)
            old.close()
        if name in self.staged.launch:
            runner.launch()
        elif not change.new.enabled:
            runner.stop()
        elif change.needs_restart and runner.state == "running":
            runner.restart()


def model_key_error(plugin: str, model_name: str | None, exc: ModelError) -> ConfigError:
    """A reload's model failure as `plugins[<plugin>].model: <reason> (got <name>)`."""
    cause = exc.__cause__ if isinstance(exc.__cause__, ModelError) else exc
    where = f" (in {cause.path})" if cause.path else ""
    return ConfigError(
        [(f"plugins[{plugin}].model", f"cannot use model: {cause.reason}{where}", model_name)],
        source="reload",
    )
