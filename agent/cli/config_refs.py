"""What `config check` sees beyond the section models: the plugins and models a config names,
and the models folder, so that a misspelt name fails here and not only at `run`."""

from __future__ import annotations

import difflib
from collections.abc import Iterable

from agent.config.sections import AgentConfig, PluginConfig
from agent.errors import ConfigError, PluginError
from agent.plugin.registry import PluginRegistry
from agent.runtime.folders import ModelStore

ErrorEntry = tuple[str, str, object]

BOARD_ONLY_HINT = "if it exists only on the board, check with --no-file-check"


def check_references(
    config: AgentConfig, *, check_files: bool = True, registry: PluginRegistry | None = None
) -> None:
    """ConfigError listing every plugin that is not installed, every model that is not in the
    store and a models_dir that is not there; with `check_files` off (a board's file checked
    away from the board) the models folder and the model names are not looked at."""
    registry = registry if registry is not None else PluginRegistry()
    errors = [e for pc in config.plugins for e in _plugin_errors(pc, registry)]
    if check_files:
        errors += _model_errors(config, registry)
    if errors:
        raise ConfigError(errors, source="references")


def _plugin_errors(pc: PluginConfig, registry: PluginRegistry) -> list[ErrorEntry]:
    installed = registry.names()
    if pc.name in installed:
        return []
    message = f"no plugin of that name is installed{_did_you_mean(pc.name, installed)}"
    return [(f"plugins[{pc.name}].name", message, pc.name)]


def _model_errors(config: AgentConfig, registry: PluginRegistry) -> list[ErrorEntry]:
    folder = config.models_dir
    if not folder.is_dir():
        return [("models_dir", f"directory not found; {BOARD_ONLY_HINT}", str(folder))]
    store = ModelStore(folder, config.state_dir)
    known = store.names()
    errors: list[ErrorEntry] = []
    for pc, model in _models_named(config.plugins, registry):
        if model not in known:
            where = f"plugins[{pc.name}].model"
            message = f"no model of that name in {folder}{_did_you_mean(model, known)}"
            errors.append((where, message, model))
    return errors


def _models_named(
    plugins: Iterable[PluginConfig], registry: PluginRegistry
) -> Iterable[tuple[PluginConfig, str]]:
    """(plugin, model name) for every plugin that runs a model: its own or its default one."""
    for pc in plugins:
        model = pc.model
        if model is None:
            try:
                model = registry.load(pc.name).default_model
            except PluginError:
                continue  # reported as a plugin error already, or it fails to import at run
        if model is not None:
            yield pc, model


def _did_you_mean(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f" (did you mean '{close[0]}'?)"
    return f"; known: {', '.join(known) or 'none'}"
