"""The built-in remote commands: their argument models, one small handler each, and the table
that names them.

None runs a shell or takes a path: plugins and models are addressed by name, and
`config.reload` re-reads only the file the agent was started with. The argument models import
nothing heavy (no paho, no runtime): `builtin_command_args()` serves `config check` too.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol

from pydantic import BaseModel, ConfigDict, Field

from agent import __version__
from agent.config.sections import ID_PATTERN, AgentConfig
from agent.engine.api import EngineControl
from agent.errors import CommandError
from agent.plugin.base import PluginParams
from agent.sync.commands import CommandRegistry, NoArgs
from agent.sync.infer import ModelCache


class CommandContext(Protocol):
    """What the built-in commands need from the agent (the sync service provides it)."""

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

    def uptime_s(self) -> float:
        """Seconds since the sync service was built."""

    def status(self) -> dict[str, Any]:
        """The status document (connection, outbox, jobs, plugins, uptime)."""

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

    # An empty update is the identity of a partial update, so it succeeds and changes nothing:
    # a client that builds the dict from a form need not special-case "nothing edited", and
    # refusing it once made `{}` look like a way to list the params (`plugin.params` does that).
    params: dict[str, Any] = Field(
        description="Keys of the plugin's params model (see plugin.params); {} changes nothing"
    )


class StatsArgs(_Args):
    """Optionally one plugin only."""

    plugin: str | None = Field(None, pattern=ID_PATTERN, description="Only this plugin")


class InferArgs(_Args):
    """A model run on given inputs."""

    model: str = Field(pattern=r"^[a-z0-9_]+$", description="Model name in the model store")
    inputs: list[Any] = Field(min_length=1, description="One nested list per model input")
    format: Literal["tflite", "onnx"] | None = Field(None, description="Backend; default tflite")


class Builtin(NamedTuple):
    """One built-in command: its name, the handler method's name, its args, what it does."""

    name: str
    method: str
    args: type[BaseModel]
    description: str


BUILTINS = (
    Builtin("ping", "ping", NoArgs, "Liveness and round trip"),
    Builtin("status", "status", NoArgs, "Connection, outbox, jobs and plugins"),
    Builtin("plugins.list", "plugins_list", NoArgs, "Every plugin with its state and params"),
    Builtin("plugin.params", "plugin_params", PluginArgs, "A plugin's params: values and schema"),
    Builtin("plugin.start", "plugin_start", PluginArgs, "Start a stopped plugin"),
    Builtin("plugin.stop", "plugin_stop", PluginArgs, "Stop a running plugin"),
    Builtin("plugin.restart", "plugin_restart", PluginArgs, "Restart a plugin with fresh setup"),
    Builtin("plugin.set", "plugin_set", PluginSetArgs, "Change params between two ticks"),
    Builtin("stats", "stats", StatsArgs, "Loop histograms per plugin"),
    Builtin("models.list", "models_list", NoArgs, "Models in the store and who uses them"),
    Builtin("infer", "infer", InferArgs, "Run a named model on given inputs"),
    Builtin(
        "config.reload",
        "config_reload",
        NoArgs,
        "Re-read the config file; a bad one changes nothing",
    ),
)
BUILTIN_COMMANDS = tuple(b.name for b in BUILTINS)


def builtin_command_args() -> dict[str, type[BaseModel]]:
    """Each built-in command's name and its argument model (to validate arguments up front)."""
    return {b.name: b.args for b in BUILTINS}


def register_builtins(registry: CommandRegistry, ctx: CommandContext) -> None:
    """Register every built-in command against `ctx`."""
    handlers = BuiltinHandlers(ctx)
    for b in BUILTINS:
        handler: Callable[[Any], Any] = getattr(handlers, b.method)
        registry.register(b.name, handler, b.args, description=b.description)


class BuiltinHandlers:
    """One small handler per built-in command, over a `CommandContext`."""

    def __init__(self, ctx: CommandContext) -> None:
        self._ctx = ctx

    def ping(self, _: NoArgs) -> dict[str, Any]:
        """Liveness and round trip."""
        uptime = round(self._ctx.uptime_s(), 3)
        return {
            "pong": True,
            "ts": round(time.time(), 6),
            "version": __version__,
            "uptime_s": uptime,
        }

    def status(self, _: NoArgs) -> dict[str, Any]:
        """The status document."""
        return self._ctx.status()

    def plugins_list(self, _: NoArgs) -> list[dict[str, Any]]:
        """Every plugin with its state and its params (values and schema)."""
        control = self._ctx.control
        return [
            {**p, "params": describe_params(control.params(p["name"]))} for p in control.plugins()
        ]

    def plugin_params(self, args: PluginArgs) -> dict[str, Any]:
        """One plugin's params: the value in force and the JSON schema of each."""
        self._plugin(args.name)
        return {"name": args.name, "params": describe_params(self._ctx.control.params(args.name))}

    def plugin_start(self, args: PluginArgs) -> dict[str, Any]:
        """Start a stopped plugin."""
        return self._plugin_action(args.name, self._ctx.control.start_plugin)

    def plugin_stop(self, args: PluginArgs) -> dict[str, Any]:
        """Stop a running plugin."""
        return self._plugin_action(args.name, self._ctx.control.stop_plugin)

    def plugin_restart(self, args: PluginArgs) -> dict[str, Any]:
        """Restart a plugin with a fresh setup."""
        return self._plugin_action(args.name, self._ctx.control.restart_plugin)

    def plugin_set(self, args: PluginSetArgs) -> dict[str, Any]:
        """Change a plugin's params between two ticks."""
        self._plugin(args.name)
        control = self._ctx.control
        if not args.params:  # nothing to apply: no hand-over to the loop
            return {"name": args.name, "params": control.params(args.name).model_dump(mode="json")}
        return {"name": args.name, "params": control.set_params(args.name, args.params)}

    def stats(self, args: StatsArgs) -> dict[str, Any]:
        """Loop statistics of every plugin, or of one."""
        all_stats = self._ctx.control.stats()
        if args.plugin is None:
            return all_stats
        if args.plugin not in all_stats:
            raise CommandError("not_found", f"no statistics for plugin {args.plugin!r}")
        return {args.plugin: all_stats[args.plugin]}

    def models_list(self, _: NoArgs) -> list[dict[str, Any]]:
        """Models in the store, and which plugin runs which."""
        active = {
            plugin: {"name": slot.model.name, "version": slot.model.version}
            for plugin, slot in self._ctx.control.model_slots().items()
        }
        return self._ctx.models.list(active)

    def infer(self, args: InferArgs) -> dict[str, Any]:
        """Run a named model on the given inputs."""
        return self._ctx.models.infer(args.model, args.inputs, args.format)

    def config_reload(self, _: NoArgs) -> dict[str, Any]:
        """Re-read the config file the agent was started with and apply it."""
        path = self._ctx.config_path
        if path is None:
            raise CommandError("no_config_file", "the agent was not started from a config file")
        from agent.config import reload_from_file

        return reload_from_file(path, self._ctx.apply_config, remote=True)

    def _plugin(self, name: str) -> dict[str, Any]:
        for p in self._ctx.control.plugins():
            if p.get("name") == name:
                return p
        raise CommandError("not_found", f"no plugin {name!r}")

    def _plugin_action(self, name: str, action: Callable[[str], None]) -> dict[str, Any]:
        """Check the plugin exists, act on it, republish the state; the plugin as it is now."""
        self._plugin(name)
        action(name)
        self._ctx.state_changed()
        return self._plugin(name)


def describe_params(params: PluginParams) -> dict[str, dict[str, Any]]:
    """Each param's value in force beside its JSON schema (type, bounds, default, description),
    nested models inlined so one entry reads on its own."""
    schema = type(params).model_json_schema()
    defs = schema.get("$defs", {})
    values = params.model_dump(mode="json")
    return {
        key: {"value": values.get(key), **_inline(prop, defs)}
        for key, prop in schema.get("properties", {}).items()
    }


def _inline(node: Any, defs: dict[str, Any], seen: frozenset[str] = frozenset()) -> Any:
    """`node` with every `{"$ref": "#/$defs/X"}` replaced by X; a ref already being expanded
    stays a ref (a recursive model would otherwise never end)."""
    if isinstance(node, list):
        return [_inline(n, defs, seen) for n in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref not in seen:
        target = defs.get(ref.removeprefix("#/$defs/"))
        if target is not None:
            rest = {k: v for k, v in node.items() if k != "$ref"}
            return {**_inline(target, defs, seen | {ref}), **rest}
    return {k: _inline(v, defs, seen) for k, v in node.items()}
