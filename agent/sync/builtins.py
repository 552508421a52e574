"""The built-in remote commands and their argument models.

None runs a shell or takes a path: plugins and models are addressed by name, and
`config.reload` re-reads only the file the agent was started with.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agent import __version__
from agent.config.sections import ID_PATTERN, AgentConfig
from agent.engine.api import EngineControl
from agent.errors import CommandError
from agent.sync.commands import CommandRegistry, NoArgs
from agent.sync.infer import ModelCache

BUILTIN_COMMANDS = (
    "ping",
    "status",
    "plugins.list",
    "plugin.start",
    "plugin.stop",
    "plugin.restart",
    "plugin.set",
    "stats",
    "models.list",
    "infer",
    "config.reload",
)


class CommandHost(Protocol):
    """What the built-in commands need from the sync service."""

    @property
    def config(self) -> AgentConfig:
        """The configuration in force."""

    @property
    def control(self) -> EngineControl:
        """The engine."""

    @property
    def config_path(self) -> Path | None:
        """The file the agent was started with, if any."""

    @property
    def models(self) -> ModelCache:
        """Loaded models for `infer`."""

    def status(self) -> dict[str, Any]:
        """Sync status (connection, outbox, jobs)."""

    def apply_config(self, config: AgentConfig) -> dict[str, Any]:
        """Hand a validated config to the engine and the sync service; what changed."""

    def state_changed(self) -> None:
        """Republish the retained state soon (plugins or models changed)."""


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class PluginArgs(_Args):
    """Arguments naming one plugin."""

    name: str = Field(pattern=ID_PATTERN, description="Plugin name as configured")


class PluginSetArgs(PluginArgs):
    """A partial params update for one plugin."""

    params: dict[str, Any] = Field(min_length=1, description="Keys of the plugin's params model")


class StatsArgs(_Args):
    """Optionally one plugin only."""

    plugin: str | None = Field(None, pattern=ID_PATTERN, description="Only this plugin")


class InferArgs(_Args):
    """A model run on given inputs."""

    model: str = Field(pattern=r"^[a-z0-9_]+$", description="Model name in the model store")
    inputs: list[Any] = Field(min_length=1, description="One nested list per model input")
    format: Literal["tflite", "onnx"] | None = Field(None, description="Backend; default tflite")


def register_builtins(registry: CommandRegistry, host: CommandHost) -> None:
    """Register every built-in command against `host`."""
    started = time.monotonic()

    def ping(_: NoArgs) -> dict[str, Any]:
        return {
            "pong": True,
            "ts": round(time.time(), 6),
            "version": __version__,
            "uptime_s": round(time.monotonic() - started, 3),
        }

    def status(_: NoArgs) -> dict[str, Any]:
        out = dict(host.status())
        out["plugins"] = host.control.plugins()
        out["uptime_s"] = round(time.monotonic() - started, 3)
        return out

    def plugins_list(_: NoArgs) -> list[dict[str, Any]]:
        return host.control.plugins()

    def _plugin(name: str) -> dict[str, Any]:
        for p in host.control.plugins():
            if p.get("name") == name:
                return p
        raise CommandError("not_found", f"no plugin {name!r}")

    def start(args: PluginArgs) -> dict[str, Any]:
        _plugin(args.name)
        host.control.start_plugin(args.name)
        host.state_changed()
        return _plugin(args.name)

    def stop(args: PluginArgs) -> dict[str, Any]:
        _plugin(args.name)
        host.control.stop_plugin(args.name)
        host.state_changed()
        return _plugin(args.name)

    def restart(args: PluginArgs) -> dict[str, Any]:
        _plugin(args.name)
        host.control.restart_plugin(args.name)
        host.state_changed()
        return _plugin(args.name)

    def set_params(args: PluginSetArgs) -> dict[str, Any]:
        _plugin(args.name)
        return {"name": args.name, "params": host.control.set_params(args.name, args.params)}

    def stats(args: StatsArgs) -> dict[str, Any]:
        all_stats = host.control.stats()
        if args.plugin is None:
            return all_stats
        if args.plugin not in all_stats:
            raise CommandError("not_found", f"no statistics for plugin {args.plugin!r}")
        return {args.plugin: all_stats[args.plugin]}

    def models_list(_: NoArgs) -> list[dict[str, Any]]:
        active = {
            plugin: {"name": slot.model.name, "version": slot.model.version}
            for plugin, slot in host.control.model_slots().items()
        }
        return host.models.list(active)

    def infer(args: InferArgs) -> dict[str, Any]:
        return host.models.infer(args.model, args.inputs, args.format)

    def reload(_: NoArgs) -> dict[str, Any]:
        path = host.config_path
        if path is None:
            raise CommandError("no_config_file", "the agent was not started from a config file")
        from agent.config import reload_from_file

        return reload_from_file(path, host.apply_config, remote=True)

    r = registry.register
    r("ping", ping, description="Liveness and round trip")
    r("status", status, description="Connection, outbox, jobs and plugins")
    r("plugins.list", plugins_list, description="Every plugin with its state")
    r("plugin.start", start, PluginArgs, description="Start a stopped plugin")
    r("plugin.stop", stop, PluginArgs, description="Stop a running plugin")
    r("plugin.restart", restart, PluginArgs, description="Restart a plugin with fresh setup")
    r("plugin.set", set_params, PluginSetArgs, description="Change params between two ticks")
    r("stats", stats, StatsArgs, description="Loop histograms per plugin")
    r("models.list", models_list, description="Models in the store and who uses them")
    r("infer", infer, InferArgs, description="Run a named model on given inputs")
    r("config.reload", reload, description="Re-read the config file; a bad one changes nothing")


def builtin_command_args() -> dict[str, type[BaseModel]]:
    """Every built-in command's argument model, by name (provisional: the sync branch owns it)."""
    args: dict[str, type[BaseModel]] = {name: NoArgs for name in BUILTIN_COMMANDS}
    for name in ("plugin.start", "plugin.stop", "plugin.restart"):
        args[name] = PluginArgs
    args.update({"plugin.set": PluginSetArgs, "stats": StatsArgs, "infer": InferArgs})
    return args
