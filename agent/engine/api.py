"""What the engine offers to the rest of the agent (sync, commands, OTA, watchdog)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

from agent.config.sections import AgentConfig
from agent.plugin.base import PluginParams
from agent.plugin.channel import OutputChannel
from agent.runtime.base import Model
from agent.runtime.slot import ModelSlot


class EngineControl(Protocol):
    """The running plugin host, as seen by remote commands, the sync thread and OTA.

    Every method is safe to call from any thread: changes to a loop are handed to that loop and
    applied between two ticks.
    """

    def plugins(self) -> list[dict[str, Any]]:
        """One dict per configured plugin: name, state, rate_hz, model, model_version, ticks,
        overruns, restarts, last_error."""

    def start_plugin(self, name: str) -> None:
        """Start a stopped plugin; PluginError if unknown."""

    def stop_plugin(self, name: str) -> None:
        """Stop a running plugin (its loop ends within one period)."""

    def restart_plugin(self, name: str) -> None:
        """Stop, then start again with fresh setup."""

    def set_params(self, name: str, params: dict[str, Any]) -> dict[str, Any]:
        """Validate a partial update with the plugin's params model, apply it between ticks and
        return the full params now in force; ConfigError naming the bad key otherwise."""

    def params(self, name: str) -> PluginParams:
        """The params in force for plugin `name` (its params model: schema and values);
        PluginError if unknown."""

    def stats(self) -> dict[str, dict[str, Any]]:
        """Per plugin: tick_us and lateness_us (p50, p99, p999, max), ticks, overruns, skipped."""

    def channels(self) -> list[OutputChannel]:
        """The output channel of every plugin, for the sync thread to drain."""

    def model_slots(self) -> dict[str, ModelSlot]:
        """The model slot of every plugin that has a model, keyed by plugin name."""

    def swap_model(self, name: str, model: Model, *, timeout: float = 2.0) -> Model:
        """Make `model` the one plugin `name` runs: bound to the slot's buffers off the loop, then
        activated by the loop between two ticks; blocks until done and returns the old model.
        ModelError if the model does not fit the slot or the plugin's own check."""

    def swap_model_folder(self, name: str, folder: Path | None, *, timeout: float = 30.0) -> str:
        """For an isolated plugin (its model lives in its own process): load the model in
        `folder` (None: the active version) there, check it like `swap_model` does, run it from
        a tick on; returns the version now running. PluginError if the plugin is not isolated,
        or its process refused the model or died loading it."""

    def reload(self, config: AgentConfig) -> dict[str, Any]:
        """Apply a new, already validated config: plugins added, removed, re-rated or re-paramed;
        returns what changed. On any error nothing changes and the error is raised."""

    def tick_counters(self) -> dict[str, int]:
        """Ticks done so far per plugin on a live loop (the watchdog checks that they advance);
        a plugin crashed or in restart backoff is left out: the supervisor is handling it."""
